"""Keeping an agent registered with one orchestrator for as long as it serves."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from types import TracebackType

import grpc
from structlog.typing import FilteringBoundLogger
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from agentmesh._proto.agentmesh.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from agentmesh.agent.board import SessionBoard
from agentmesh.errors import RETRY_AFTER_METADATA_KEY
from agentmesh.security import CertFiles
from agentmesh.security.tls import RotatingChannelCredentials

#: Statuses that mean "the orchestrator is not there right now": retried quickly.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# gRPC's own reconnect backoff (up to minutes) would make RPCs fail fast long after
# the orchestrator is back; keep it in step with ours. Not grpc.min_reconnect_backoff_ms:
# gRPC core also takes it as the least time a connection attempt gets, and at 100 ms a busy
# orchestrator's TLS handshakes were cut off by the thousand (issue 9), each a handshake
# the orchestrator had done for nothing. Without it an attempt gets 20 s (the call's
# deadline comes first).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True, slots=True)
class RegistrationTiming:
    """How patiently a keeper registers."""

    #: First pause after an unreachable orchestrator; doubles (with jitter) up to ``max_backoff``.
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    #: Pause after a refusal (PERMISSION_DENIED, INVALID_ARGUMENT, ...).
    refused_retry: float = 30.0
    #: Re-register when no session is open this long after registering.
    session_wait: float = 3.0
    call_timeout: float = 5.0
    deregister_timeout: float = 1.0


class RegistrationKeeper:
    """Registers an agent's card with the orchestrator at ``address`` and keeps it registered.

    ``async with`` owns the channel; :meth:`run` registers, then registers again
    whenever a Session ends or none opens in time (the orchestrator restarted and
    forgot the agent), until it is cancelled. :meth:`deregister` says goodbye.
    """

    def __init__(
        self,
        address: str,
        card: common_pb2.AgentCard,
        files: CertFiles,
        board: SessionBoard,
        log: FilteringBoundLogger,
        timing: RegistrationTiming | None = None,
    ) -> None:
        self.address = address
        self._card = card
        self._files = files
        self._board = board
        self._log = log.bind(orchestrator=address)
        self._timing = timing or RegistrationTiming()
        self._backoff = wait_exponential_jitter(
            multiplier=self._timing.initial_backoff,
            max=self._timing.max_backoff,
            jitter=self._timing.initial_backoff,
        )
        # Re-read when the certificate files change: rotation needs no restart.
        self._credentials = RotatingChannelCredentials(files)
        self._dialled_with: grpc.ChannelCredentials | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: orchestrator_pb2_grpc.RegistryAsyncStub | None = None

    async def __aenter__(self) -> RegistrationKeeper:
        await self._refresh_channel()
        return self

    async def _refresh_channel(self) -> None:
        """(Re)dial the orchestrator when the agent's certificate has been rotated."""
        credentials = self._credentials()
        if credentials is self._dialled_with and self._channel is not None:
            return
        old, self._dialled_with = self._channel, credentials
        self._channel = grpc.aio.secure_channel(self.address, credentials, options=_CHANNEL_OPTIONS)
        self._stub = orchestrator_pb2_grpc.RegistryStub(self._channel)
        if old is not None:
            self._log.info("registration.certificate_rotated")
            await old.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()

    @property
    def stub(self) -> orchestrator_pb2_grpc.RegistryAsyncStub:
        """The Registry stub; only inside ``async with``."""
        if self._stub is None:
            raise RuntimeError("RegistrationKeeper used outside 'async with'")
        return self._stub

    async def run(self) -> None:
        """Keep the agent registered until cancelled."""
        while True:
            await self.register()
            await self._until_registration_is_stale()

    async def register(self) -> orchestrator_pb2.RegisterAgentResponse:
        """Register once, retrying until the orchestrator accepts."""
        request = orchestrator_pb2.RegisterAgentRequest(card=self._card)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(grpc.aio.AioRpcError),
            wait=self._wait,
            stop=stop_never,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._refresh_channel()
                response = await self.stub.RegisterAgent(request, timeout=self._timing.call_timeout)
        self._log.info("registration.registered", identity=response.identity)
        return response

    async def deregister(self) -> None:
        """Tell the orchestrator the agent is gone; best effort, never raises an RPC error."""
        request = orchestrator_pb2.DeregisterAgentRequest(name=self._card.name)
        try:
            await self.stub.DeregisterAgent(request, timeout=self._timing.deregister_timeout)
        except grpc.aio.AioRpcError as exc:
            self._log.warning("registration.deregister_failed", code=exc.code().name)
            return
        self._log.info("registration.deregistered")

    async def _until_registration_is_stale(self) -> None:
        board = self._board
        ended = board.ended
        try:
            async with asyncio.timeout(self._timing.session_wait):
                await board.wait_until(lambda: board.open_count > 0 or board.ended > ended)
        except TimeoutError:
            self._log.info("registration.no_session", waited=self._timing.session_wait)
            return
        await board.wait_until(lambda: board.ended > ended)
        self._log.info("registration.session_ended")

    def _wait(self, state: RetryCallState) -> float:
        if _status(state) in TRANSIENT:
            return self._backoff(state)
        if (hint := _retry_after(state)) is not None:
            # Busy, and it says when to come back. Spread out: the agents told together
            # should not all come back together.
            return hint * random.uniform(1.0, 1.5)
        return self._timing.refused_retry

    def _before_sleep(self, state: RetryCallState) -> None:
        status = _status(state)
        fields = {
            "code": status.name if status else None,
            "attempt": state.attempt_number,
            "retry_in": round(state.upcoming_sleep, 3),
        }
        # The reason too when transient: "busy", "no connection" and "deadline passed" call
        # for different fixes, and the code alone does not tell them apart.
        fields["reason"] = _details(state)
        busy = _retry_after(state) is not None
        if status not in TRANSIENT and not busy:
            self._log.error("registration.refused", **fields)
        elif state.attempt_number == 1 or state.attempt_number % 30 == 0:
            # An orchestrator that is down for long would otherwise flood the log.
            self._log.warning("registration.busy" if busy else "registration.unreachable", **fields)
        else:
            self._log.debug("registration.busy" if busy else "registration.unreachable", **fields)


def _error(state: RetryCallState) -> grpc.aio.AioRpcError | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc if isinstance(exc, grpc.aio.AioRpcError) else None


def _status(state: RetryCallState) -> grpc.StatusCode | None:
    error = _error(state)
    return error.code() if error is not None else None


def _details(state: RetryCallState) -> str:
    error = _error(state)
    return (error.details() or "") if error is not None else ""


def _retry_after(state: RetryCallState) -> float | None:
    """Seconds the orchestrator said to wait before coming back (TryLater), if it did."""
    error = _error(state)
    if error is None or error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA_KEY:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                return None
    return None
