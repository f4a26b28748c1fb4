"""Fingerprints of SubmitTask requests: what an idempotency key promises to stand for.

A key names one request. A retry sends the same request again and gets the first task;
the same key with a different request is a client bug (or a key collision) and is refused,
instead of silently answering with a task that does something else.
"""

from __future__ import annotations

import hashlib
import json

from agentmesh.models import TaskRequest


def fingerprint(request: TaskRequest) -> str:
    """sha256 (hex) of the request's canonical JSON form, the key itself left out.

    Everything that shapes the task counts: plan, workflow or goal, input, priority,
    timeout and labels. Keys are sorted so that equal requests hash equally however their
    maps were ordered on the wire.
    """
    canonical = json.dumps(
        request.model_dump(mode="json", exclude={"idempotency_key"}),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
