"""Schemathesis against the served OpenAPI schema: no 5xx, nothing the schema does not say.

Every operation gets generated requests (valid and invalid), sent over real HTTPS with a
bearer token to the running orchestrator; each answer must be documented (status, content
type, headers) and match its schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https
from tests.security.helpers import RawAgent
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

EXAMPLES = 25
#: Streams that never end on their own (a valid request is answered forever): documented in
#: the schema and checked here as documented, but not fuzzed; their own tests cover them.
ENDLESS = {"/v1/tasks/changes"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def test_generated_requests_get_no_5xx_and_only_documented_answers(
    http_mesh: Orchestrator,
    certs: Path,
    https: Https,
    token_for: Callable[[str, str], str],
    echo_agent: RawAgent,
) -> None:
    token = token_for("client", "carol")
    async with https(None, None, token=token) as api:
        await eventually(lambda: api.get("/v1/tasks"), lambda r: r.status_code == 200)
        raw = (await api.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(raw)
    base_url = f"https://localhost:{http_mesh.http_port}"
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/tasks", "/v1/tasks/{task_id}/events", *ENDLESS}
    for path in ENDLESS:
        answers = raw["paths"][path]["get"]["responses"]
        assert "text/event-stream" in answers["200"]["content"]
        assert {"401", "403"} <= set(answers)
    operations = [op for op in operations if op.path not in ENDLESS]

    def fuzz(operation: schemathesis.APIOperation) -> None:
        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def one(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base_url,
                headers=headers,
                checks=CHECKS,
                verify=str(certs / "ca.pem"),
                timeout=20,
            )

        one()

    for operation in operations:
        # The requests go out from a thread: the server runs on this test's event loop.
        await asyncio.to_thread(fuzz, operation)
    async with https(None, None, token=token) as api:
        assert (await api.get("/healthz")).status_code == 200
    assert isinstance(api, httpx.AsyncClient)
