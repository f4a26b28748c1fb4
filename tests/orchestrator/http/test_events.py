"""A task's events as Server-Sent Events over HTTPS, resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import Identity, IdentityKind
from agentmesh.security.revocation import revoke
from tests.orchestrator.http.conftest import Https
from tests.orchestrator.http.test_api import ECHO_PLAN, _finished
from tests.security.helpers import RawAgent


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each SSE frame as {"id", "event", "data"} (comments skipped)."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            frame[key] = json.loads(value) if key == "data" else value


async def _events(
    api: httpx.AsyncClient, task_id: str, after: str = "", **headers: str
) -> list[dict[str, Any]]:
    url = f"/v1/tasks/{task_id}/events"
    params = {"after": after} if after else {}
    async with api.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [frame async for frame in _frames(response)]


async def test_the_stream_carries_every_event_in_order_and_ends_after_the_final_state(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
        frames = await _events(api, task_id)
    ids = [int(f["id"]) for f in frames]
    assert ids == list(range(1, len(ids) + 1))
    assert all(int(f["id"]) == f["data"]["sequence"] for f in frames)
    assert frames[-1]["event"] == "task_state"
    assert frames[-1]["data"]["state"] == "succeeded"
    assert {"event": "step_state", "state": "succeeded", "step": "a"} in [
        {"event": f["event"], "state": f["data"]["state"], "step": f["data"]["step_id"]}
        for f in frames
    ]


async def test_a_reconnecting_watcher_gets_exactly_the_events_after_its_last_event_id(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
        await _finished(api, task_id)
        everything = await _events(api, task_id)
        resumed = await _events(api, task_id, **{"Last-Event-ID": everything[1]["id"]})
        by_query = await _events(api, task_id, after=everything[1]["id"])
        at_end = await _events(api, task_id, **{"Last-Event-ID": everything[-1]["id"]})
    assert resumed == everything[2:]
    assert by_query == everything[2:]
    assert at_end == []


async def test_a_cursor_past_the_last_event_is_refused_before_the_stream_starts(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https("client", "alice") as api:
        task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
        done = await _finished(api, task_id)
        assert done["state"] == "succeeded"
        past = await api.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "999"})
        garbage = await api.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "x1"})
    assert past.status_code == 400
    assert past.json()["code"] == "OUT_OF_RANGE"
    assert past.json()["field"] == "after_sequence"
    assert garbage.status_code == 400
    assert garbage.json()["field"] == "Last-Event-ID"


async def test_bob_cannot_watch_alices_task(https: Https, echo_agent: RawAgent) -> None:
    async with https("client", "alice") as alice:
        task_id = (await alice.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
    async with https("client", "bob") as bob:
        answer = await bob.get(f"/v1/tasks/{task_id}/events")
    assert answer.status_code == 404
    assert answer.json()["field"] == "task_id"


async def test_a_watcher_revoked_meanwhile_is_told_why_and_the_stream_ends(
    http_mesh: Orchestrator, http_settings: Settings, certs: Path, https: Https
) -> None:
    async with RawAgent(certs, "echo-1") as hanging:  # the task never finishes
        await hanging.register(http_mesh)
        async with https("client", "alice") as api:
            task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
            url = f"/v1/tasks/{task_id}/events"
            async with api.stream("GET", url) as response:
                frames = _frames(response)
                first = await anext(frames)
                assert first["id"] == "1"
                revoke(
                    Path(http_settings.revocation_file),
                    identities=[Identity("agentmesh.test", IdentityKind.CLIENT, "alice")],
                )
                rest = [frame async for frame in frames]
    assert rest[-1]["event"] == "error"
    assert rest[-1]["data"]["code"] == "UNAUTHENTICATED"
    assert "revocation list" in rest[-1]["data"]["reason"]


async def test_an_orchestrator_stopping_ends_its_open_event_streams(
    http_settings: Settings, certs: Path
) -> None:
    from tests.orchestrator.http.conftest import tls

    async with Orchestrator(http_settings) as running, RawAgent(certs, "echo-1") as hanging:
        await hanging.register(running)
        api = httpx.AsyncClient(
            base_url=f"https://localhost:{running.http_port}",
            verify=tls(certs, "client", "alice"),
            timeout=20,
        )
        task_id = (await api.post("/v1/tasks", json=ECHO_PLAN)).json()["task_id"]
        response = await api.send(
            api.build_request("GET", f"/v1/tasks/{task_id}/events"), stream=True
        )
        frames = _frames(response)
        assert (await anext(frames))["id"] == "1"
    # The orchestrator has stopped: the stream is over (ended or cut), not hanging.
    with contextlib.suppress(httpx.HTTPError):
        async with asyncio.timeout(10):
            _ = [frame async for frame in frames]
    await response.aclose()
    await api.aclose()
