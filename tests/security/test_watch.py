"""A reloading file's watcher has an owner: should it crash, the crash is logged by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from agentmesh.security.watch import ReloadingFile
from tests.support.waiting import eventually


async def test_a_watcher_that_crashes_is_logged_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("first")

    def load(file: Path) -> str:
        text = file.read_text()
        if text == "second":
            # A bug in the loader (not a ConfigError, which only keeps the last version).
            raise KeyError("loader bug")
        return text

    with capture_logs() as logs:
        async with ReloadingFile(path, load, interval=0.05, what="policy") as watched:
            path.write_text("second")

            async def crashes() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "background.crashed"]

            (crash,) = await eventually(crashes, bool, within=10, interval=0.05)
            assert watched.value == "first"
    assert crash["task"] == "watch-policy.yaml"
    assert "KeyError: 'loader bug'" in crash["error"]
