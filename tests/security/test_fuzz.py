"""Property-based fuzzing of the whole public API from its own OpenAPI (schemathesis, all checks).

Every operation gets a bounded number of generated requests, valid and invalid; the service must
answer none with a 5xx, every answer must match the documented status codes, content types and
schemas, and the schema must tell the truth both ways: what it allows is accepted, what it
forbids is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import SqliteDatabases
from tests.processes import StrataProcess, service_env
from tests.servers import free_port

TOKEN = "fuzzer-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = int(os.environ.get("STRATA_FUZZ_EXAMPLES", "15"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN_LIMIT = 900  # seconds; the whole run takes four to eight minutes on two cores

pytestmark = pytest.mark.timeout(RUN_LIMIT + 60)


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


def test_every_answer_keeps_the_promises_of_the_schema(fuzzed_service: str,
                                                       tmp_path: Path) -> None:
    """`schemathesis run --checks all`, as a new user would run it: besides "no 5xx" and
    "responses match their schemas", a schema-valid request must be accepted, a schema-violating
    one refused, and a 405 must name every method of its path. The stateful phase is left out to
    keep the run short; examples, coverage and fuzzing cover every operation."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{fuzzed_service}/openapi.json",
        "--checks", "all", "--header", f"Authorization: Bearer {TOKEN}",
        "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--request-timeout", "30", "--no-color",
    ]
    # run in a scratch folder: the CLI keeps a cache of what it found in its working directory
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_LIMIT,
                         check=False)
    # the report without the bodies it quotes (a generated body can be megabytes)
    lines = (run.stdout + run.stderr).splitlines()
    report = "\n".join(line if len(line) < 300 else line[:300] + " …" for line in lines)
    assert run.returncode == 0, report[-40_000:]
