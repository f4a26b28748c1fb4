"""The web dashboard in real headless Chromium, over HTTPS, against a real orchestrator and agent.

Debian's ``chromium`` is driven through Playwright (never ``playwright install``; scripts/test.sh
installs the package). Set ``AGENTMESH_SCREENSHOTS=DIR`` to keep a screenshot of each page.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Generous: the machine is busy.
WAIT_MS = 30_000
#: A reference to step a's output: b waits for a without naming it in ``needs``.
A_ENTRY = "${steps.a.output.entry}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian chromium."""
    async with async_playwright() as playwright:
        running = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture
async def echo_process(http_mesh: Orchestrator, https: Https, agents: AgentProcesses) -> str:
    """The test agent (test.echo, test.work, test.fail ...) as process echo-1, registered."""
    agents.start("tests.support.agents", "echo-1", [f"localhost:{http_mesh.port}"])
    async with https("client", "alice") as api:

        async def names() -> list[str]:
            return [a["card"]["name"] for a in (await api.get("/v1/agents")).json()]

        await eventually(names, lambda found: "echo-1" in found, within=30)
    return "echo-1"


@pytest.fixture
async def page(
    browser: Browser, http_mesh: Orchestrator, token_for: Callable[[str, str], str]
) -> AsyncIterator[Page]:
    """The dashboard opened as alice with ``/?token=...``; every request it makes is kept in
    ``page.requested``."""
    context = await browser.new_context(ignore_https_errors=True)  # the mesh CA is self-signed
    opened = await context.new_page()
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.requested = requested  # type: ignore[attr-defined]
    errors: list[str] = []
    opened.errors = errors  # type: ignore[attr-defined]
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    token = token_for("client", "alice")
    await opened.goto(f"https://localhost:{http_mesh.http_port}/?token={token}")
    try:
        yield opened
    finally:
        await context.close()
    # No script error, no refusal by the Content-Security-Policy, no failed load.
    assert errors == []


async def _shot(page: Page, name: str) -> None:
    folder = os.environ.get("AGENTMESH_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def _submit(api: httpx.AsyncClient, steps: list[dict[str, Any]], **task: Any) -> str:
    answer = await api.post("/v1/tasks", json={"plan": {"steps": steps}, **task})
    assert answer.status_code == 201, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def test_a_task_appears_in_the_list_and_its_nodes_turn_succeeded_as_events_arrive(
    page: Page, https: Https, echo_process: str, tmp_path: Path
) -> None:
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    assert "token=" not in page.url  # kept in sessionStorage, not in the history
    gate = tmp_path / "gate"
    work = {"journal": str(tmp_path / "journal"), "entry": "a", "gate": str(gate)}
    async with https("client", "alice") as api:
        task_id = await _submit(
            api,
            [
                {"id": "a", "capability": "test.work", "input": work},
                {"id": "b", "capability": "test.echo", "input": {"value": A_ENTRY}},
                {"id": "c", "capability": "test.echo", "input": {"value": 2}, "needs": ["a"]},
                {
                    "id": "d",
                    "capability": "test.echo",
                    "input": {"value": "${item}"},
                    "for_each": "${input.items}",
                    "needs": ["c"],
                },
            ],
            input={"items": ["x", "y"]},
        )
    row = page.locator(f'tr[data-task="{task_id}"]')
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await row.get_by_role("link").click()

    node = page.locator("svg.dag g.node")
    await expect(node).to_have_count(4)
    # b waits for a through its input's reference, c through its needs.
    await expect(page.locator("svg.dag path.edge")).to_have_count(3)
    await expect(page.locator('g.node[data-step="a"]')).to_have_attribute(
        "data-state", "running", timeout=WAIT_MS
    )
    await expect(page.locator('g.node[data-step="c"]')).to_have_attribute("data-state", "pending")
    await _shot(page, "task-running")
    gate.touch()  # only now can the task go on: what follows arrives over the event stream
    for step in ("a", "b", "c", "d", "d[0]", "d[1]"):  # d's fan-out instances join the graph
        await expect(page.locator(f'g.node[data-step="{step}"]')).to_have_attribute(
            "data-state", "succeeded", timeout=WAIT_MS
        )
    await expect(page.locator(".task-header .badge")).to_have_text("succeeded", timeout=WAIT_MS)
    await expect(page.locator('tr[data-step="b"]')).to_contain_text("echo-1")
    await page.locator('g.node[data-step="b"]').click()
    await expect(page.locator(".detail pre.output")).to_contain_text('"value": "a"')
    await _shot(page, "task-succeeded")

    base = page.url.split("/#")[0].rstrip("/")
    assert all(url.startswith(base) for url in page.requested), page.requested


async def test_the_task_list_shows_a_task_and_its_state_change_live_without_a_reload(
    page: Page, https: Https, echo_process: str, tmp_path: Path
) -> None:
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
    await page.evaluate("window.sameDocument = true")  # gone if the page were loaded again
    gate = tmp_path / "gate"
    work = {"journal": str(tmp_path / "journal"), "entry": "a", "gate": str(gate)}
    async with https("client", "alice") as api:
        task_id = await _submit(api, [{"id": "a", "capability": "test.work", "input": work}])
    row = page.locator(f'tr[data-task="{task_id}"]')
    await expect(row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    lists = [url for url in page.requested if "/v1/tasks?" in url]
    gate.touch()  # the only way on for the task: what follows must reach the open page
    await expect(row).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    await expect(row.locator(".badge")).to_have_text("succeeded")
    assert await page.evaluate("window.sameDocument === true")
    # It came over the stream: the list was not read again meanwhile.
    assert [url for url in page.requested if "/v1/tasks?" in url] == lists
    assert any(url.endswith("/v1/tasks/changes") for url in page.requested)
    await _shot(page, "tasks-live")


async def test_without_its_stream_the_task_list_still_moves_by_reading_the_list_again(
    page: Page, https: Https, echo_process: str
) -> None:
    # The network refuses the stream (the page's other requests go through); the page loads
    # again to open it anew.
    await page.route("**/v1/tasks/changes", lambda route: route.abort())
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("reconnecting…", timeout=WAIT_MS)
    async with https("client", "alice") as api:
        task_id = await _submit(api, [{"id": "a", "capability": "test.echo", "input": {}}])
    row = page.locator(f'tr[data-task="{task_id}"]')
    await expect(row).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    # The network is back: the page follows the stream again.
    await page.unroute("**/v1/tasks/changes")
    await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
    # The refused requests are the browser's to report, not script errors.
    page.errors[:] = [e for e in page.errors if "net::ERR_FAILED" not in e]  # type: ignore[attr-defined]


async def test_a_failing_step_shows_as_failed_with_its_reason(
    page: Page, https: Https, echo_process: str
) -> None:
    async with https("client", "alice") as api:
        task_id = await _submit(
            api,
            [
                {"id": "fine", "capability": "test.echo", "input": {"value": 1}},
                {
                    "id": "broken",
                    "capability": "test.fail",
                    "input": {"message": "the disk is on fire"},
                    "needs": ["fine"],
                },
            ],
        )
        fine_id = await _submit(
            api, [{"id": "fine", "capability": "test.echo", "input": {"value": 1}}]
        )
    await page.goto(page.url.split("#")[0] + f"#/tasks/{task_id}")
    broken = page.locator('g.node[data-step="broken"]')
    await expect(broken).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(broken).to_contain_text("the disk is on fire")
    await expect(page.locator('tr[data-step="broken"] td.error')).to_contain_text(
        "the disk is on fire"
    )
    await expect(page.locator('g.node[data-step="fine"]')).to_have_attribute(
        "data-state", "succeeded"
    )
    await expect(page.locator(".task-header .badge")).to_have_text("failed", timeout=WAIT_MS)
    await _shot(page, "task-failed")

    await page.get_by_role("link", name="all tasks").click()
    await expect(page.locator(f'tr[data-task="{fine_id}"]')).to_be_visible(timeout=WAIT_MS)
    await page.get_by_role("checkbox", name="failed", exact=True).check()
    await expect(page).to_have_url(re.compile(r"#/\?state=failed$"))
    await expect(page.locator(f'tr[data-task="{task_id}"]')).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("tr[data-task]")).to_have_count(1, timeout=WAIT_MS)
    await _shot(page, "tasks")
    await page.get_by_role("link", name="Agents").click()
    agent = page.locator('tr[data-agent="echo-1"]')
    await expect(agent).to_be_visible(timeout=WAIT_MS)
    await expect(agent).to_contain_text("closed")
    await expect(agent).to_contain_text("test.fail@")
    # Three attempts on echo-1, the broken one failed: its latency and its success rate.
    headers = page.locator("table.agents th")
    await expect(headers.filter(has_text="Latency")).to_have_count(1)
    await expect(headers.filter(has_text="Success")).to_have_count(1)
    await expect(agent.locator("td.success")).to_have_text("67%", timeout=WAIT_MS)
    await expect(agent.locator("td.latency")).to_have_text(re.compile(r"^(<1|\d+) ms$|^\d+\.\d s$"))
    await _shot(page, "agents")


async def test_without_a_token_the_page_asks_for_one(
    browser: Browser, http_mesh: Orchestrator
) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    try:
        page = await context.new_page()
        await page.goto(f"https://localhost:{http_mesh.http_port}/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT_MS)
        await page.get_by_placeholder("token").fill("not-a-token")
        await page.get_by_role("button", name="Use token").click()
        await expect(page.locator(".login .error")).to_contain_text("unknown or revoked token")
    finally:
        await context.close()
