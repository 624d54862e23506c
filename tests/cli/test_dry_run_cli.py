"""`strata jobs submit FILE --dry-run`: each layer's columns and sample, and nothing created."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.cli.commands import ORDERS_JOB, orders_spec, strata

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
async def test_a_dry_run_prints_each_layer_and_creates_nothing(
    service: httpx.AsyncClient, base_url: str, landed: list[Path]
) -> None:
    shown = await strata("jobs", "submit", ORDERS_JOB, "--dry-run", "--sample-rows", "300",
                         "--show", "2", "--url", base_url, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "dry run on the first 300 source rows: nothing was created" in out
    for layer in ("ods", "dwd", "dws", "ds"):
        assert f"\n{layer}  " in out
    assert "300 rows  0 rejects  0 deduped" in out  # ods
    assert "_row_number" in out and "DECIMAL(12,2)" in out and "revenue_7d_usd" in out
    assert "orders/orders_0001.csv" in out
    assert (await service.get("/v1/jobs")).json()["total"] == 0

    as_json = await strata("jobs", "submit", ORDERS_JOB, "--dry-run", "--sample-rows", "10",
                           "--json", "--url", base_url)
    document = json.loads(as_json.stdout)
    assert document["valid"] is True and document["layers"]["ods"]["rows"] == 10


@sqlite_only
async def test_a_refused_dry_run_exits_3_naming_the_layer(
    base_url: str, landed: list[Path], tmp_path: Path
) -> None:
    spec = orders_spec()
    spec["params"]["layers"]["dws"] = {"sql": "SELECT * FROM read_csv('/etc/passwd')"}
    path = tmp_path / "escape.json"
    path.write_text(json.dumps(spec))
    refused = await strata("jobs", "submit", path, "--dry-run", "--url", base_url)
    assert refused.exit_code == 3 and refused.stdout == ""
    assert "Dry run refused (422): dry run refused at layer dws" in refused.stderr
    assert "params.layers.dws.sql:" in refused.stderr
