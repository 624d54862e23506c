"""The DuckDB engine runs one stage on real files: the layer rules of DESIGN.md, `params`."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.domain.states import Stage
from app.executor.engine.base import CancelToken, StageCancelled, StageFailed
from app.executor.engine.duckdb_engine import DuckDBEngine
from tests.executor.engine.stages import (
    StageRunner,
    csv_params,
    read_layer,
    rows_of,
    tree,
    write_csv,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")

EVENTS_HEADER = ["id", "ts", "qty", "note"]
# id 1: two events, the later one wins; id 2: exact duplicate; id 3: a later bad event wins and
# is rejected (not replaced by its older valid event); id 4: quantity NULL; id 5: quantity 0
EVENTS = [
    [1, "2024-01-01 10:00:00", 5, "old"],
    [1, "2024-01-02 10:00:00", 6, "new"],
    [2, "2024-01-03 00:00:00", 1, "dup"],
    [2, "2024-01-03 00:00:00", 1, "dup"],
    [3, "2024-01-01 00:00:00", 2, "valid-older"],
    [3, "2024-01-05 00:00:00", -1, "bad-latest"],
    [4, "2024-01-04 00:00:00", None, "no-qty"],
    [5, "2024-01-04 00:00:00", 0, "zero"],
]
DWD_SQL = (
    "SELECT CAST(id AS INTEGER) AS id, CAST(ts AS TIMESTAMP) AS ts, "
    "TRY_CAST(qty AS INTEGER) AS qty, note, _source_file, _row_number FROM ods"
)
DWD_LAYER: dict[str, Any] = {
    "sql": DWD_SQL,
    "dedupe": {"keys": ["id"], "order_by": "ts DESC, _source_file, _row_number"},
    "checks": [
        {"name": "has_qty", "expr": "qty IS NOT NULL"},
        {"name": "positive_qty", "expr": "qty > 0"},
    ],
}


def events_landing(runner: StageRunner) -> None:
    write_csv(runner.landing / "in" / "events.csv", EVENTS_HEADER, EVENTS)


# -- LandingToODS ---------------------------------------------------------------------------


def test_ods_keeps_every_landing_row_and_adds_lineage(runner: StageRunner) -> None:
    write_csv(runner.landing / "in" / "b.csv", ["k", "v"], [["b1", "x"], ["b2", None]])
    write_csv(runner.landing / "in" / "a.csv", ["k", "v"], [["a1", "1"], ["a2", "N/A"], ["a3", ""]])
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    result = runner.run(csv_params(), Stage.LANDING_TO_ODS)

    rows = sorted(
        rows_of(runner.layer_dir("ods")), key=lambda r: (r["_source_file"], r["_row_number"])
    )
    assert [(r["_source_file"], r["_row_number"], r["k"], r["v"]) for r in rows] == [
        ("in/a.csv", 1, "a1", "1"),
        ("in/a.csv", 2, "a2", "N/A"),  # strings stay as in the file
        ("in/a.csv", 3, "a3", None),  # an empty field is NULL
        ("in/b.csv", 1, "b1", "x"),
        ("in/b.csv", 2, "b2", None),
    ]
    ingested = {r["_ingested_at"] for r in rows}
    assert len(ingested) == 1
    assert before - dt.timedelta(seconds=1) <= ingested.pop() <= before + dt.timedelta(minutes=1)
    assert result.layer == "ods" and result.rows == 5
    assert result.rejects == 0 and result.deduped == 0 and result.rejects_path is None
    assert result.path == str(runner.layer_dir("ods")) and Path(result.path).is_absolute()
    schema = pq.read_schema(sorted(runner.layer_dir("ods").glob("*.parquet"))[0])
    assert schema.field("_row_number").type == pa.int64()
    assert schema.field("_ingested_at").type == pa.timestamp("us")


def test_ods_row_number_is_the_line_order_of_a_large_file(runner: StageRunner) -> None:
    n = 60_000
    write_csv(
        runner.landing / "in" / "big.csv",
        ["line", "pad"],
        [[i, "x" * (i % 7)] for i in range(1, n + 1)],
    )
    write_csv(runner.landing / "in" / "small.csv", ["line", "pad"], [[i, "y"] for i in range(1, 4)])

    runner.run(csv_params(), Stage.LANDING_TO_ODS, threads=2)

    table = read_layer(runner.layer_dir("ods"))
    assert table.num_rows == n + 3
    for row in table.select(["line", "_row_number"]).to_pylist():
        assert int(row["line"]) == row["_row_number"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ods_lineage_for_jsonl_and_parquet_sources(runner: StageRunner, fmt: str) -> None:
    folder = runner.landing / "in"
    folder.mkdir()
    for name, values in (("f1", [10, 11, 12]), ("f2", [20, 21])):
        if fmt == "jsonl":
            text = "".join(json.dumps({"v": v, "s": f"s{v}"}) + "\n" for v in values)
            (folder / f"{name}.jsonl").write_text(text)
        else:
            table = pa.table({"v": values, "s": [f"s{v}" for v in values]})
            pq.write_table(table, folder / f"{name}.parquet", row_group_size=1)
    params = {"source": {"path": f"in/*.{fmt}", "format": fmt}}

    result = runner.run(params, Stage.LANDING_TO_ODS)

    rows = sorted(rows_of(runner.layer_dir("ods")), key=lambda r: r["v"])
    assert [(r["v"], r["s"], r["_source_file"], r["_row_number"]) for r in rows] == [
        (10, "s10", f"in/f1.{fmt}", 1),
        (11, "s11", f"in/f1.{fmt}", 2),
        (12, "s12", f"in/f1.{fmt}", 3),
        (20, "s20", f"in/f2.{fmt}", 1),
        (21, "s21", f"in/f2.{fmt}", 2),
    ]
    assert result.rows == 5


@pytest.mark.parametrize(
    ("options", "text", "expected"),
    [
        ({"header": True, "delimiter": ";"}, "a;b\n1;x\n", [{"a": 1, "b": "x"}]),
        (
            {"header": True, "nullstr": "NA", "all_varchar": True},
            "a,b\nNA,x\n",
            [{"a": None, "b": "x"}],
        ),
        ({"header": False, "all_varchar": True}, "1,x\n", [{"column0": "1", "column1": "x"}]),
        ({"header": True, "skip": 1}, "junk line\na,b\n7,q\n", [{"a": 7, "b": "q"}]),
        (
            {"header": True, "quote": "'", "all_varchar": True},
            "a,b\n'1,5',x\n",
            [{"a": "1,5", "b": "x"}],
        ),
    ],
)
def test_ods_passes_source_options_to_the_reader(
    runner: StageRunner, options: dict[str, Any], text: str, expected: list[dict[str, Any]]
) -> None:
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "f.csv").write_text(text)
    params = {"source": {"path": "in/*.csv", "format": "csv", "options": options}}

    runner.run(params, Stage.LANDING_TO_ODS)

    rows = rows_of(runner.layer_dir("ods"))
    assert [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows] == expected


def test_ods_option_values_are_literals_not_sql(runner: StageRunner) -> None:
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "f.csv").write_text("a,b\nx,y\n")
    params = {
        "source": {
            "path": "in/*.csv",
            "format": "csv",
            "options": {"header": True, "nullstr": "x' OR true) --"},
        },
    }
    result = runner.run(params, Stage.LANDING_TO_ODS)
    assert result.rows == 1
    assert rows_of(runner.layer_dir("ods"))[0]["a"] == "x"


def test_ods_without_a_match_fails_naming_the_path(runner: StageRunner) -> None:
    with pytest.raises(StageFailed) as failed:
        runner.run(csv_params("nothing/*.csv"), Stage.LANDING_TO_ODS)
    assert (
        str(failed.value) == "source path 'nothing/*.csv' matched no files in the landing directory"
    )
    assert tree(runner.warehouse) == set()


def test_ods_refuses_a_landing_file_that_points_outside(
    runner: StageRunner, tmp_path: Path
) -> None:
    secret = write_csv(tmp_path / "secret.csv", ["k"], [["s"]])
    write_csv(runner.landing / "in" / "ok.csv", ["k"], [["a"]])
    (runner.landing / "in" / "evil.csv").symlink_to(secret)

    with pytest.raises(StageFailed, match=r"'in/evil\.csv' points outside the landing directory"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS)
    assert not runner.layer_dir("ods").exists()


def test_ods_follows_a_symlink_that_stays_in_the_landing_directory(runner: StageRunner) -> None:
    real = write_csv(runner.landing / "elsewhere" / "real.csv", ["k"], [["a"], ["b"]])
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "link.csv").symlink_to(real)

    runner.run(csv_params(), Stage.LANDING_TO_ODS)

    assert {r["_source_file"] for r in rows_of(runner.layer_dir("ods"))} == {"in/link.csv"}


def test_ods_fails_on_a_source_column_named_like_lineage(runner: StageRunner) -> None:
    write_csv(runner.landing / "in" / "f.csv", ["k", "_row_number"], [["a", "1"]])
    with pytest.raises(StageFailed, match="column named '_row_number', which ODS adds as lineage"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS)
    assert not runner.layer_dir("ods").exists()


def test_a_malformed_source_file_fails_without_absolute_paths(runner: StageRunner) -> None:
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "bad.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(StageFailed) as failed:
        runner.run({"source": {"path": "in/*.parquet", "format": "parquet"}}, Stage.LANDING_TO_ODS)
    message = str(failed.value)
    assert "landing/in/bad.parquet" in message
    assert str(runner.landing) not in message


# -- the other stages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "missing", "previous"),
    [
        (Stage.ODS_TO_DWD, "ods", "LandingToODS"),
        (Stage.DWD_TO_DWS, "dwd", "ODSToDWD"),
        (Stage.DWS_TO_DS, "dws", "DWDToDWS"),
    ],
)
def test_a_stage_without_its_input_layer_fails_naming_it(
    runner: StageRunner, stage: Stage, missing: str, previous: str
) -> None:
    with pytest.raises(StageFailed) as failed:
        runner.run(csv_params(), stage)
    assert str(failed.value) == (
        f"input layer '{missing}' of job job-1 is missing; run {previous} first"
    )


def test_a_layer_without_sql_passes_its_input_through(runner: StageRunner) -> None:
    events_landing(runner)
    results = runner.run_all(csv_params(), upto=Stage.DWS_TO_DS)
    assert [results[layer].rows for layer in ("ods", "dwd", "dws", "ds")] == [8, 8, 8, 8]

    def ordered(layer: str) -> list[dict[str, Any]]:
        return sorted(rows_of(runner.layer_dir(layer)), key=lambda r: r["_row_number"])

    assert ordered("ds") == ordered("dws") == ordered("dwd") == ordered("ods")


def test_dedupe_keeps_the_first_row_per_key_then_checks_the_kept_rows(runner: StageRunner) -> None:
    events_landing(runner)
    params = csv_params(dwd=DWD_LAYER)
    runner.run(params, Stage.LANDING_TO_ODS)

    result = runner.run(params, Stage.ODS_TO_DWD)

    kept = {r["id"]: r for r in rows_of(runner.layer_dir("dwd"))}
    assert {i: r["note"] for i, r in kept.items()} == {1: "new", 2: "dup"}
    rejects = {r["id"]: r for r in rows_of(runner.layer_dir("dwd_rejects"))}
    assert {i: (r["note"], r["_reject_reason"]) for i, r in rejects.items()} == {
        3: ("bad-latest", "positive_qty"),  # the latest event is bad: rejected, not replaced
        4: ("no-qty", "has_qty"),  # NULL fails a check; the first failing check names it
        5: ("zero", "positive_qty"),
    }
    # rejects keep the layer's columns (after sql) plus _reject_reason
    assert list(read_layer(runner.layer_dir("dwd_rejects")).schema.names) == [
        "id",
        "ts",
        "qty",
        "note",
        "_source_file",
        "_row_number",
        "_reject_reason",
    ]
    assert (result.rows, result.rejects, result.deduped) == (2, 3, 3)
    assert result.rows + result.rejects + result.deduped == 8  # rows after sql
    assert result.rejects_path == str(runner.layer_dir("dwd_rejects"))


def test_checks_never_see_the_rows_dedupe_dropped(runner: StageRunner) -> None:
    # the superseded events hold a value the check expression cannot even cast
    rows = [[1, "2024-01-01 00:00:00", "not-a-number"], [1, "2024-01-02 00:00:00", "5"]]
    write_csv(runner.landing / "in" / "f.csv", ["id", "ts", "qty"], rows * 50)
    layer = {
        "dedupe": {"keys": ["id"], "order_by": "ts DESC, _row_number"},
        "checks": [{"name": "castable", "expr": "CAST(qty AS INTEGER) > 0"}],
    }
    runner.run(csv_params(dwd=layer), Stage.LANDING_TO_ODS)

    result = runner.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)

    assert (result.rows, result.rejects, result.deduped) == (1, 0, 99)


@pytest.mark.parametrize("per_thread_output", [False, True])
@pytest.mark.parametrize(
    "layer",
    [
        {"sql": DWD_SQL},
        {"sql": DWD_SQL, "checks": DWD_LAYER["checks"]},
        {"sql": DWD_SQL, "dedupe": DWD_LAYER["dedupe"]},
        DWD_LAYER,
        {"dedupe": {"keys": ["id"]}},
    ],
    ids=["sql", "checks", "dedupe", "dedupe+checks", "dedupe-without-order"],
)
def test_no_row_is_lost_output_plus_rejects_plus_deduped_is_rows_after_sql(
    runner: StageRunner, layer: dict[str, Any], per_thread_output: bool
) -> None:
    rows = [[i % 700, f"2024-01-01 00:00:{i % 60:02d}", i % 9 - 1, f"n{i}"] for i in range(3000)]
    write_csv(runner.landing / "in" / "e.csv", EVENTS_HEADER, rows)
    runner.engine = DuckDBEngine(per_thread_output=per_thread_output)
    params = csv_params(dwd=layer)
    runner.run(params, Stage.LANDING_TO_ODS)

    result = runner.run(params, Stage.ODS_TO_DWD)

    assert result.rows + result.rejects + result.deduped == 3000
    assert read_layer(runner.layer_dir("dwd")).num_rows == result.rows
    if layer.get("dedupe"):
        assert result.deduped == 3000 - 700
        ids = read_layer(runner.layer_dir("dwd")).column("id").to_pylist()
        assert len(ids) == len(set(ids))
    if layer.get("checks"):
        assert read_layer(runner.layer_dir("dwd_rejects")).num_rows == result.rejects > 0
    else:
        assert result.rejects == 0 and result.rejects_path is None
    names = sorted(p.name for p in runner.layer_dir("dwd").iterdir())
    assert names == [f"part-{i:05d}.parquet" for i in range(result.files)]


def test_a_layer_with_a_column_named_rowid_can_be_deduped(runner: StageRunner) -> None:
    write_csv(
        runner.landing / "in" / "f.csv",
        ["rowid", "k", "v"],
        [[9, "a", 1], [8, "a", 2], [7, "b", 3]],
    )
    layer = {
        "sql": "SELECT CAST(rowid AS INT) AS rowid, k, CAST(v AS INT) AS v FROM ods",
        "dedupe": {"keys": ["k"], "order_by": "v DESC"},
    }
    params = csv_params(dwd=layer)
    runner.run(params, Stage.LANDING_TO_ODS)

    result = runner.run(params, Stage.ODS_TO_DWD)

    assert sorted(rows_of(runner.layer_dir("dwd")), key=lambda r: r["k"]) == [
        {"rowid": 8, "k": "a", "v": 2},
        {"rowid": 7, "k": "b", "v": 3},
    ]
    assert result.deduped == 1


def test_a_layer_with_checks_may_not_have_a_reject_reason_column(runner: StageRunner) -> None:
    events_landing(runner)
    layer = {
        "sql": "SELECT *, 'x' AS _reject_reason FROM ods",
        "checks": [{"name": "c", "expr": "true"}],
    }
    runner.run(csv_params(dwd=layer), Stage.LANDING_TO_ODS)
    with pytest.raises(StageFailed, match="'_reject_reason' is reserved"):
        runner.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)
    assert not runner.layer_dir("dwd").exists()


@pytest.mark.parametrize("with_checks", [False, True], ids=["streamed", "materialised"])
def test_ds_keeps_the_row_order_of_its_sql_in_one_file(
    runner: StageRunner, with_checks: bool
) -> None:
    rows = [[i, (i * 7919) % 5003] for i in range(20_000)]
    write_csv(runner.landing / "in" / "f.csv", ["id", "v"], rows)
    checks = [{"name": "even", "expr": "id % 2 = 0"}] if with_checks else []
    params = csv_params(
        dwd={"sql": "SELECT CAST(id AS INT) AS id, CAST(v AS INT) AS v FROM ods"},
        ds={"sql": "SELECT id, v FROM dws ORDER BY v DESC, id", "checks": checks},
    )

    result = runner.run_all(params)["ds"]

    stored = read_layer(runner.layer_dir("ds")).to_pylist()
    kept = [{"id": i, "v": v} for i, v in rows if i % 2 == 0 or not with_checks]
    assert stored == sorted(kept, key=lambda r: (-r["v"], r["id"]))
    assert result.files == 1
    if with_checks:
        rejects = read_layer(runner.layer_dir("ds_rejects")).to_pylist()
        assert [r["v"] for r in rejects] == sorted((r["v"] for r in rejects), reverse=True)


def test_layers_are_zstd_parquet_with_row_groups_of_batch_size(runner: StageRunner) -> None:
    # DuckDB rounds a row-group size up to whole vectors of 2048 rows
    write_csv(runner.landing / "in" / "f.csv", ["id"], [[i] for i in range(10_000)])
    params = {**csv_params(), "batch_size": 4096}
    runner.run(params, Stage.LANDING_TO_ODS)
    groups = []
    for path in runner.layer_dir("ods").glob("*.parquet"):
        meta = pq.read_metadata(path)
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            groups.append(group.num_rows)
            assert {group.column(c).compression for c in range(group.num_columns)} == {"ZSTD"}
    assert sum(groups) == 10_000
    assert max(groups) <= 4096 and len(groups) >= 3


# -- re-runs and failures -------------------------------------------------------------------------


def test_a_rerun_replaces_the_layer_and_never_duplicates(runner: StageRunner) -> None:
    events_landing(runner)
    first = runner.run(csv_params(), Stage.LANDING_TO_ODS)
    stamp = {r["_ingested_at"] for r in rows_of(runner.layer_dir("ods"))}

    second = runner.run(csv_params(), Stage.LANDING_TO_ODS)

    assert first.rows == second.rows == read_layer(runner.layer_dir("ods")).num_rows == 8
    assert {r["_ingested_at"] for r in rows_of(runner.layer_dir("ods"))} != stamp
    assert tree(runner.warehouse / "job-1") == {"ods"} | {
        f"ods/{p.name}" for p in runner.layer_dir("ods").iterdir()
    }


def test_a_rerun_without_checks_removes_the_old_rejects(runner: StageRunner) -> None:
    events_landing(runner)
    runner.run(csv_params(dwd=DWD_LAYER), Stage.LANDING_TO_ODS)
    runner.run(csv_params(dwd=DWD_LAYER), Stage.ODS_TO_DWD)
    assert runner.layer_dir("dwd_rejects").is_dir()

    result = runner.run(csv_params(dwd={"sql": DWD_SQL}), Stage.ODS_TO_DWD)

    assert result.rejects_path is None
    assert not runner.layer_dir("dwd_rejects").exists()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT no_such_column FROM ods", 'Referenced column "no_such_column" not found'),
        ("SELECT CAST(note AS INTEGER) AS n FROM ods", "Could not convert string"),
        ("SELEC * FROM ods", "syntax error"),
    ],
)
def test_a_failed_stage_keeps_the_previous_layer_and_leaves_nothing(
    runner: StageRunner, sql: str, message: str
) -> None:
    events_landing(runner)
    runner.run(csv_params(), Stage.LANDING_TO_ODS)
    runner.run(csv_params(), Stage.ODS_TO_DWD)
    before = tree(runner.warehouse)
    old_rows = rows_of(runner.layer_dir("dwd"))

    with pytest.raises(StageFailed) as failed:
        runner.run(csv_params(dwd={"sql": sql}), Stage.ODS_TO_DWD)

    assert message in str(failed.value)
    assert str(failed.value).startswith("layer dwd sql")
    assert str(runner.warehouse) not in str(failed.value)
    assert tree(runner.warehouse) == before
    assert rows_of(runner.layer_dir("dwd")) == old_rows


def test_a_check_that_does_not_parse_fails_the_stage(runner: StageRunner) -> None:
    events_landing(runner)
    layer = {"checks": [{"name": "broken", "expr": "qty >"}]}
    runner.run(csv_params(dwd=layer), Stage.LANDING_TO_ODS)
    with pytest.raises(StageFailed, match="layer dwd check 'broken'"):
        runner.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)
    assert not runner.layer_dir("dwd").exists()


def test_a_bad_memory_limit_fails_the_stage(runner: StageRunner) -> None:
    events_landing(runner)
    with pytest.raises(StageFailed, match="cannot configure the engine"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, memory_limit="lots")


def test_a_job_id_that_is_not_a_folder_name_is_refused(runner: StageRunner) -> None:
    events_landing(runner)
    with pytest.raises(StageFailed, match="cannot name a folder"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, job_id="../elsewhere")


# -- progress and cancel ---------------------------------------------------------------------------


def test_progress_rises_to_100_percent_with_the_exact_input_rows(runner: StageRunner) -> None:
    write_csv(runner.landing / "in" / "f.csv", ["id"], [[i] for i in range(5000)])
    params = csv_params(
        dwd={
            "sql": "SELECT CAST(id AS INT) AS id FROM ods",
            "checks": [{"name": "small", "expr": "id < 4000"}],
        }
    )
    runner.run(params, Stage.LANDING_TO_ODS)
    assert runner.reports[-1].percent == 100.0
    assert runner.reports[-1].processed == runner.reports[-1].total == 5000

    runner.run(params, Stage.ODS_TO_DWD)

    percents = [p.percent for p in runner.reports]
    assert percents == sorted(percents)
    assert [p for p in runner.reports if p.percent == 100.0] == [runner.reports[-1]]
    assert runner.reports[-1].processed == runner.reports[-1].total == 5000
    assert all(0 <= p.processed <= p.total for p in runner.reports)


SLOW_SQL = (
    "SELECT * FROM ods WHERE (SELECT count(*) FROM range(300000) a(x), range(300000) b(y) "
    "WHERE x + y < 0) = 0"
)


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        threading.Event().wait(0.01)


def test_cancel_interrupts_a_running_query_and_leaves_nothing(runner: StageRunner) -> None:
    events_landing(runner)
    runner.run(csv_params(), Stage.LANDING_TO_ODS)
    before = tree(runner.warehouse)
    cancel = CancelToken()
    outcome: dict[str, BaseException] = {}

    def stage() -> None:
        try:
            runner.run(csv_params(dwd={"sql": SLOW_SQL}), Stage.ODS_TO_DWD, cancel=cancel)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=stage)
    worker.start()
    # a fresh database reports the query's own progress; a connection of the shared database
    # cannot (its progress bar is a per-connection setting, locked off), so there the stage is
    # given a moment to reach its query once its scratch folder exists
    if runner.engine.small_input_bytes:
        job = runner.warehouse / "job-1"
        wait_for(lambda: any(job.glob(".tmp-dwd-*")), 20, "the stage to start")
        threading.Event().wait(0.5)
    else:
        wait_for(lambda: any(p.percent > 0 for p in list(runner.reports)), 20, "the progress")
    started = time.monotonic()
    cancel.cancel()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert time.monotonic() - started < 2.0
    assert isinstance(outcome.get("error"), StageCancelled)
    assert tree(runner.warehouse) == before  # no dwd, no temporary folder


def test_a_stage_cancelled_before_it_starts_does_nothing(runner: StageRunner) -> None:
    events_landing(runner)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(StageCancelled):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, cancel=cancel)
    assert tree(runner.warehouse) == set()
