"""The Celery app of the bridge tests' worker: ordinary Celery tasks, no agentmesh in sight.

Run by ``celery -A tests.support.celery_app worker`` (see :class:`CeleryWorker`); the broker
and backend come from ``AGENTMESH_TEST_CELERY_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task

app = Celery("bridge-tests", broker=os.environ.get("AGENTMESH_TEST_CELERY_URL", "memory://"))
app.conf.result_backend = os.environ.get("AGENTMESH_TEST_CELERY_URL", "cache+memory://")
app.conf.task_track_started = True
app.conf.worker_hijack_root_logger = False


@app.task(name="billing.total", bind=True)
def total(
    self: Task, amounts: list[float], currency: str = "EUR", gate: str = ""
) -> dict[str, Any]:
    """Report progress, wait for ``gate`` (when given) to exist, then add up."""
    self.update_state(state="PROGRESS", meta={"fraction": 0.5, "message": "adding up"})
    _wait_for(gate)
    return {"total": sum(amounts), "currency": currency}


def _wait_for(gate: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


@app.task(name="billing.declined")
def declined(card: str) -> dict[str, Any]:
    raise ValueError(f"card {card} declined")


@app.task(
    name="billing.flaky",
    bind=True,
    autoretry_for=(ConnectionError,),
    max_retries=3,
    # Not 0: with no countdown the retried run can finish before the failed run has stored
    # RETRY, and Celery's backend (read, then write) then overwrites SUCCESS with RETRY; the
    # task looks stuck in RETRY forever (seen in CI). Retries with a countdown are the norm.
    default_retry_delay=1,
)
def flaky(self: Task, marker: str, failures: int) -> dict[str, Any]:
    """Fail with ConnectionError ``failures`` times (Celery retries), then succeed."""
    path = Path(marker)
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    if seen < failures:
        raise ConnectionError(f"attempt {seen + 1} lost its connection")
    return {"attempts": seen + 1}


@app.task(name="billing.wait", bind=True)
def wait(self: Task, gate: str, journal: str) -> dict[str, Any]:
    """Journal the start (with the Celery task id), then wait until ``gate`` exists (or 60 s)."""
    with open(journal, "a") as out:
        out.write(f"start {self.request.id}\n")
    _wait_for(gate)
    with open(journal, "a") as out:
        out.write("end\n")
    return {"waited": True}


class CeleryWorker:
    """A real Celery worker process serving this module's tasks from one queue.

    The prefork pool: only there does a revoke terminate a task that already runs.
    """

    def __init__(self, url: str, queue: str, log: Path) -> None:
        self.url = url
        self.queue = queue
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "AGENTMESH_TEST_CELERY_URL": self.url}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.support.celery_app",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    "-Q",
                    self.queue,
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--hostname",
                    f"{self.queue}@%h",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
