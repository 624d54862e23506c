"""`openapi/openapi.json` is exactly what the app serves (regenerate with `make openapi`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


async def test_committed_spec_equals_the_served_spec(api: httpx.AsyncClient) -> None:
    served = (await api.get("/openapi.json")).json()
    assert served == json.loads(SPEC.read_text()), "run `make openapi` and commit the result"


async def test_docs_are_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()


async def test_every_operation_has_a_stable_id_and_errors_are_problem_json(
    api: httpx.AsyncClient,
) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (method, path)
            for code, response in operation.get("responses", {}).items():
                if code.startswith("4") and code != "413":
                    assert "application/problem+json" in response.get("content", {}), (
                        method, path, code)
