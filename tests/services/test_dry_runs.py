"""The dry-run service on real files with real DuckDB: scratch, refusals, parameters, bounds."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from app.domain.errors import TooManyRequests
from app.domain.parameters import TypedValue
from app.domain.params import JobParams
from app.executor.engine.base import (
    CancelToken,
    LayerResult,
    ProgressCallback,
    StageRequest,
)
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.services.dry_runs import DryRunRefused, DryRunService
from tests.waiting import wait_for


def params(**layers: Any) -> JobParams:
    return JobParams.model_validate({"source": {"path": "in/*.csv"}, "layers": layers})


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing" / "in"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("id,amount\n1,5\n2,15\n3,25\n")
    return tmp_path / "landing"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]


def service(landing: Path, scratch: Path, **kw: Any) -> DryRunService:
    return DryRunService(lambda: DuckDBEngine(), landing, scratch_dir=scratch, **kw)


async def test_the_scratch_folder_is_removed_after_a_run_and_after_a_refusal(
    landing: Path, scratch: Path
) -> None:
    dry = service(landing, scratch)
    result = await dry.dry_run("local", params())
    assert result.layers["ds"].rows == 3 and leftovers(scratch) == []
    with pytest.raises(DryRunRefused):
        await dry.dry_run("local", params(dws={"sql": "SELECT nope FROM dwd"}))
    assert leftovers(scratch) == []


async def test_an_empty_layer_keeps_its_columns(landing: Path, scratch: Path) -> None:
    spec = params(dwd={"sql": "SELECT id, amount FROM ods WHERE false",
                       "checks": [{"name": "c", "expr": "id > 0"}], "dedupe": {"keys": ["id"]}})
    result = await service(landing, scratch).dry_run("local", spec)
    dwd = result.layers["dwd"]
    assert (dwd.rows, dwd.rejects, dwd.deduped, dwd.sample) == (0, 0, 0, [])
    assert [c["name"] for c in dwd.columns] == ["id", "amount"]
    assert result.layers["ds"].rows == 0 and len(result.layers["ds"].columns) == 2


@pytest.mark.parametrize(("layers", "field"), [
    ({"dwd": {"checks": [{"name": "c", "expr": "(SELECT 1 FROM read_csv('/etc/passwd')) = 1"}]}},
     "params.layers.dwd.checks"),
    ({"dwd": {"dedupe": {"keys": ["id"], "order_by": "id; DROP TABLE x"}}},
     "params.layers.dwd.dedupe"),
    ({"dws": {"sql": "SELECT * FROM dwd, read_json('x.json')"}}, "params.layers.dws.sql"),
    ({"ds": {"sql": "SELECT $missing AS x FROM dws"}}, "params.layers.ds.sql"),
])
async def test_a_refusal_names_the_field_of_the_spec(
    landing: Path, scratch: Path, layers: dict[str, Any], field: str
) -> None:
    with pytest.raises(DryRunRefused) as refused:
        await service(landing, scratch).dry_run("local", params(**layers))
    layer = field.split(".")[2]
    assert refused.value.field == field and refused.value.layer == layer
    assert str(refused.value).startswith(f"dry run refused at layer {layer}: ")


async def test_run_parameters_bind_as_values(landing: Path, scratch: Path) -> None:
    spec = params(dwd={"sql": "SELECT id FROM ods WHERE amount::INTEGER > $least"})
    result = await service(landing, scratch).dry_run(
        "local", spec, {"least": TypedValue(type="integer", value=10)})
    assert [r["id"] for r in result.layers["dwd"].sample] == [2, 3]


async def test_an_owner_reads_its_own_landing_folder(landing: Path, scratch: Path) -> None:
    with pytest.raises(DryRunRefused) as refused:
        await service(landing, scratch).dry_run("alice", params())
    assert refused.value.field == "params.source.path"
    (landing / "alice" / "in").mkdir(parents=True)
    (landing / "alice" / "in" / "x.csv").write_text("id\n7\n")
    result = await service(landing, scratch).dry_run("alice", params())
    assert result.layers["ods"].sample[0]["id"] == 7


class BlockingEngine:
    """An injected fault: every stage waits until released (or cancelled)."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.lock = threading.Lock()
        self.inner = DuckDBEngine()

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        with self.lock:
            self.running += 1
        try:
            while not self.release.wait(0.01):
                cancel.raise_if_cancelled()
            return self.inner.run_stage(request, report, cancel)
        finally:
            with self.lock:
                self.running -= 1


async def test_at_most_max_running_at_once_and_one_more_is_429(
    landing: Path, scratch: Path
) -> None:
    engine = BlockingEngine()
    charged: list[str] = []

    async def charge(owner: str) -> None:
        charged.append(owner)

    dry = DryRunService(lambda: engine, landing, scratch_dir=scratch, max_running=2,
                        charge_rate=charge)
    first = asyncio.create_task(dry.dry_run("local", params()))
    second = asyncio.create_task(dry.dry_run("local", params()))
    await wait_for(lambda: engine.running == 2, timeout=10)
    with pytest.raises(TooManyRequests):
        await dry.dry_run("local", params())
    assert charged == ["local", "local"]  # a refused try costs no create from the rate
    engine.release.set()
    assert [r.layers["ds"].rows for r in await asyncio.gather(first, second)] == [3, 3]
    assert (await dry.dry_run("local", params())).layers["ods"].rows == 3
    assert leftovers(scratch) == []


async def test_a_cancelled_request_stops_the_engine_and_frees_its_slot_when_it_ends(
    landing: Path, scratch: Path
) -> None:
    engine = BlockingEngine()
    dry = DryRunService(lambda: engine, landing, scratch_dir=scratch, max_running=1)
    task = asyncio.create_task(dry.dry_run("local", params()))
    await wait_for(lambda: engine.running == 1, timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: dry._running == 0 and not leftovers(scratch), timeout=10)
    engine.release.set()
    assert (await dry.dry_run("local", params())).layers["ods"].rows == 3

