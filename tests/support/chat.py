"""The fake model server of the tests: :mod:`agentmesh.examples.fake_llm`, which ``agentmesh
dev`` serves too (one fake chat-completions server, not two)."""

from __future__ import annotations

from agentmesh.examples.fake_llm import ChatServer, JSONObject, StreamedReply, completion

__all__ = ["ChatServer", "JSONObject", "StreamedReply", "completion"]
