"""A Redis cache with an in-memory fallback: the mesh keeps working while Redis is away.

:class:`Cache` holds JSON values with expiry and fans out pub/sub messages across
orchestrator replicas; when Redis is unreachable it serves from process memory and
replays the missed writes once Redis answers again.
"""

from agentmesh.orchestrator.cache._cache import Cache
from agentmesh.orchestrator.cache._fanout import Subscription

__all__ = ["Cache", "Subscription"]
