"""Batches on the ``Agent.Session`` stream: several messages in one, in order, no I/O.

Each end of a Session may send what it has queued as one ``batch`` message, but only when
the other end has said it reads batches (the agent in its card, ``AgentCard.reads_batches``;
the orchestrator in every ``Ping``, ``Ping.reads_batches``). This module cuts queued
messages into batches that fit the stream and takes a received batch apart again; the
writers and readers of both ends use it. The orchestrator's ``WatchTaskBatches`` cuts a
watch's events into messages with the same :func:`chunks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from agentmesh._proto.agentmesh.v1 import agent_pb2

Message = TypeVar("Message", agent_pb2.OrchestratorMessage, agent_pb2.AgentMessage)
Item = TypeVar("Item")

#: Most messages in one batch: its receiver reads a batch in one go, and the first message
#: of a batch waits while the others are encoded.
MAX_BATCH = 256
#: Most bytes of one batch, below the stream's own limit: past this, batching saves nothing,
#: and a peer configured for smaller messages than ours still takes what it took before.
MAX_BATCH_BYTES = 1024 * 1024
#: What a message costs inside a batch beyond its own bytes: its field tag and its length.
_ENTRY_BYTES = 6
#: The envelope of a batch: the outer message's tag and length.
_ENVELOPE_BYTES = 16
#: Why a batch inside a batch is refused (the protocol allows one level).
NESTED = "a batch may not hold a batch"


def chunks(
    items: Iterable[Item], max_bytes: int, size: Callable[[Item], int]
) -> Iterator[list[Item]]:
    """``items`` in order, in runs whose messages (of ``size`` bytes each) fit one message of
    ``max_bytes`` (and :data:`MAX_BATCH_BYTES`), at most :data:`MAX_BATCH` long.

    A message too large to share a batch makes a run of its own, as it would travel
    without batches.
    """
    limit = min(max_bytes, MAX_BATCH_BYTES)
    run: list[Item] = []
    total = _ENVELOPE_BYTES
    for item in items:
        cost = size(item) + _ENTRY_BYTES
        if run and (total + cost > limit or len(run) >= MAX_BATCH):
            yield run
            run, total = [], _ENVELOPE_BYTES
        run.append(item)
        total += cost
    if run:
        yield run


def orchestrator_message(
    run: Sequence[agent_pb2.OrchestratorMessage],
) -> agent_pb2.OrchestratorMessage:
    """The one message that carries ``run``: the message itself when alone, else a batch."""
    if len(run) == 1:
        return run[0]
    message = agent_pb2.OrchestratorMessage()
    message.batch.messages.extend(run)
    return message


def agent_message(run: Sequence[agent_pb2.AgentMessage]) -> agent_pb2.AgentMessage:
    """The one message that carries ``run``: the message itself when alone, else a batch."""
    if len(run) == 1:
        return run[0]
    message = agent_pb2.AgentMessage()
    message.batch.messages.extend(run)
    return message


def unbatched(message: Message) -> tuple[list[Message], list[str]]:
    """The messages ``message`` carries, in order (itself when it is no batch), and why any
    were refused, each naming its field (``batch.messages[3]: ...``)."""
    if message.WhichOneof("kind") != "batch":
        return [message], []
    carried: list[Message] = []
    refused: list[str] = []
    for index, inner in enumerate(message.batch.messages):
        if inner.WhichOneof("kind") == "batch":
            refused.append(f"batch.messages[{index}]: {NESTED}")
        else:
            carried.append(inner)
    return carried, refused
