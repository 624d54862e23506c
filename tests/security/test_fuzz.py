"""Property-based fuzzing of the whole public API from its own OpenAPI (schemathesis).

Every operation gets a bounded number of generated requests, valid and invalid; the service must
answer none with a 5xx, and every answer must match the documented status codes, content types
and schemas.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.databases import SqliteDatabases
from tests.processes import StrataProcess, service_env
from tests.servers import free_port

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
TOKEN = "fuzzer-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = int(os.environ.get("STRATA_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    dbs = SqliteDatabases(root)
    dbs.setup()
    proc = StrataProcess("serve", service_env(dbs.new(root), root, STRATA_LOG_LEVEL="ERROR",
                                   STRATA_API_TOKENS=f"fuzzer={TOKEN}"),
                         free_port(), root / "serve.log")
    proc.start()
    try:
        asyncio.run(proc.ready())
        httpx.put(f"{proc.url}/v1/landing/in/a.csv", content=b"id,v\n1,a\n2,b\n", headers=AUTH)
        yield proc.url
    finally:
        proc.kill()
    assert "Traceback" not in Path(root / "serve.log").read_text(), "the service logged a crash"


def operations() -> list[str]:
    """`METHOD /path` of every operation, from the committed spec (a test keeps it equal to the
    served one)."""
    spec = json.loads(SPEC.read_text())
    return [f"{method.upper()} {path}" for path, item in spec["paths"].items()
            for method in item]


@pytest.mark.parametrize("operation", operations())
def test_no_5xx_and_every_response_matches_the_schema(fuzzed_service: str,
                                                      operation: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_service}/openapi.json")
    found = [r.ok() for r in schema.get_all_operations() if r.ok().label == operation]
    assert found, f"{operation} is not served"

    @given(case=found[0].as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: schemathesis.Case) -> None:
        # Beyond JSON Schema the API validates meaning (paths stay in the landing directory,
        # reader options per format, unique check names), so a schema-valid body may rightly be
        # a 422; the attack lists test those rules one by one.
        case.call_and_validate(headers=AUTH, timeout=30, excluded_checks=[positive_data_acceptance])

    fuzz()
