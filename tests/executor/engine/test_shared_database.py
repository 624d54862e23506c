"""Small stages on the shared locked database write what a fresh database per stage writes.

The same stages run through both paths (`duckdb_engine("shared")` and `duckdb_engine("fresh")`)
and their layers, rejects and counts are compared; then what keeps stages on the shared database
apart: each connection sees only its own input and temp tables, and leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.domain.states import Stage
from app.executor.engine import duckdb_engine as duckdb_engine_module
from app.executor.engine.base import (
    CancelToken,
    LayerResult,
    SandboxViolation,
    StageCancelled,
    StageFailed,
)
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.engine.shared_database import MAX_READERS, SharedDatabase
from tests.executor.engine.stages import (
    DATABASE_PATHS,
    StageRunner,
    csv_params,
    duckdb_engine,
    read_layer,
    rows_of,
    write_csv,
)

HEADER = ["id", "kind", "amount", "ts"]
ROWS = [
    [i, "even" if i % 2 == 0 else "odd", f"{i * 1.25:.2f}", f"2024-01-{1 + i % 28:02d} 10:00:00"]
    for i in range(40)
] + [[3, "dup", "9.99", "2024-02-01 00:00:00"], [5, None, None, None]]

TYPED = (
    "SELECT CAST(id AS INTEGER) AS id, kind, CAST(amount AS DECIMAL(10, 2)) AS amount, "
    "CAST(ts AS TIMESTAMP) AS ts, CAST(ts AS DATE) AS day, CAST(id AS DOUBLE) / 3 AS third, "
    "CAST(id AS BIGINT) * 1000000000 AS big, id::INTEGER % 3 = 0 AS fizz, "
    "[CAST(id AS INTEGER), 1] AS pair, {'k': kind, 'n': CAST(id AS SMALLINT)} AS rec, "
    "CAST(amount AS DECIMAL(30, 4)) AS wide, encode(kind) AS raw FROM ods"
)
# (dwd, dws, ds) layer specs: every shape of stage the engine has
CASES: dict[str, dict[str, Any]] = {
    "pass-through": {},
    "typed sql": {"dwd": {"sql": TYPED}},
    "ordered sql": {"dwd": {"sql": TYPED + " ORDER BY id DESC, kind"}},
    "checks": {
        "dwd": {
            "sql": TYPED,
            "checks": [
                {"name": "has_kind", "expr": "kind IS NOT NULL"},
                {"name": "small", "expr": "id < 30"},
            ],
        }
    },
    "dedupe without order_by": {"dwd": {"sql": TYPED, "dedupe": {"keys": ["id"]}}},
    "dedupe and checks": {
        "dwd": {
            "sql": TYPED,
            "dedupe": {"keys": ["id"], "order_by": "ts DESC NULLS LAST, kind"},
            "checks": [{"name": "priced", "expr": "amount IS NOT NULL"}],
        }
    },
    "rowid column": {
        "dwd": {"sql": "SELECT id AS rowid, kind FROM ods", "dedupe": {"keys": ["kind"]}}
    },
    "parameter": {"dwd": {"sql": "SELECT * FROM ods WHERE kind = $kind"}},
    "dws and ds": {
        "dwd": {"sql": TYPED},
        "dws": {
            "sql": "SELECT kind, count(*) AS n, sum(amount) AS total, max(ts) AS last "
            "FROM dwd GROUP BY kind"
        },
        "ds": {"sql": "SELECT * FROM dws ORDER BY n DESC, kind NULLS FIRST"},
    },
    "empty result": {"dwd": {"sql": "SELECT * FROM ods WHERE false"}},
    # types pyarrow would write differently: these stages go to the fresh path by themselves
    "uuid": {"dwd": {"sql": "SELECT id, md5(kind)::UUID AS u FROM ods WHERE kind IS NOT NULL"}},
    "interval": {"dwd": {"sql": "SELECT id, to_days(CAST(id AS INTEGER)) AS d FROM ods"}},
    "hugeint": {"dwd": {"sql": "SELECT CAST(id AS HUGEINT) AS h FROM ods"}},
    "json": {"dwd": {"sql": "SELECT id, to_json({'k': kind}) AS j FROM ods"}},
}


def run_job(root: Path, path: str, layers: dict[str, Any]) -> tuple[DuckDBEngine, dict[str, Any]]:
    """The job through DS on `path`; each layer's Parquet schema, rows, rejects and counts."""
    engine = duckdb_engine(path)
    runner = StageRunner(root / "landing", root / path, engine)
    runner.warehouse.mkdir(parents=True)
    write_csv(runner.landing / "in" / "f.csv", HEADER, ROWS)
    params = csv_params(**layers)
    results: dict[str, LayerResult] = {}
    for stage in Stage:
        results[stage.layer] = runner.run(params, stage, parameters={"kind": "odd"})
    engine.close()
    written: dict[str, Any] = {}
    for layer, result in results.items():
        written[layer] = describe(Path(result.path))
        if result.rejects_path:
            written[f"{layer} rejects"] = describe(Path(result.rejects_path))
        written[f"{layer} counts"] = (result.rows, result.rejects, result.deduped, result.files)
    return engine, written


def describe(folder: Path) -> dict[str, Any]:
    """What a reader sees of a layer. Not compared: whether a column is REQUIRED (DuckDB's writer
    marks one so when its statistics prove no NULL; pyarrow writes from an Arrow result, which
    carries no such proof, so its columns are all OPTIONAL) and `_ingested_at` (the time of each
    job's own landing stage)."""
    table = read_layer(folder)
    table = table.cast(pa.schema([field.with_nullable(True) for field in table.schema]))
    if "_ingested_at" in table.column_names:
        table = table.drop_columns(["_ingested_at"])
    files = sorted(folder.glob("*.parquet"))
    metadata = pq.read_metadata(files[0])
    return {
        "schema": table.schema,
        "duckdb types": duckdb.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{files[0]}')"
        ).fetchall(),
        # (DuckDB also annotates plain INT32/INT64 columns as Int(32/64), pyarrow does not:
        # the same type to every reader)
        "physical": [(c.name, c.physical_type) for c in metadata.schema],
        "row groups": metadata.num_row_groups,
        "codec": metadata.row_group(0).column(0).compression if metadata.num_row_groups else None,
        "rows": table.to_pylist(),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_a_stage_writes_the_same_layer_on_the_shared_and_on_a_fresh_database(
    tmp_path: Path, case: str
) -> None:
    shared, on_shared = run_job(tmp_path, "shared", CASES[case])
    fresh, on_fresh = run_job(tmp_path, "fresh", CASES[case])

    assert fresh.shared.connections == 0
    assert shared.shared.reads == 1
    assert shared.shared.connections >= 2  # ods and dwd started there (and dws, ds unless a
    # type pyarrow would write differently sent the previous layer to the fresh path)
    assert on_shared.keys() == on_fresh.keys()
    for key, written in on_fresh.items():
        if key.endswith("counts"):
            assert on_shared[key] == written, key
            continue
        layer = key.split()[0]
        ordered = layer == "ds" or "ORDER BY" in str(CASES[case].get(layer, {}).get("sql"))
        if ordered:  # stored order is the ORDER BY: the same rows in the same order
            assert on_shared[key] == written, key
        else:  # same rows, in an order that is unspecified
            assert {**on_shared[key], "rows": None} == {**written, "rows": None}, key
            assert sort(on_shared[key]["rows"]) == sort(written["rows"]), key


def sort(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


def test_a_stage_needing_more_memory_than_the_shared_database_has_runs_on_a_fresh_one(
    runner: StageRunner, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(runner.landing / "in" / "f.csv", ["id"], [[1], [2]])
    sort_1m = (  # a full sort of 1M strings: more than 64 MB, and nowhere to spill to
        "SELECT count(*) AS n FROM (SELECT repeat('x', 40) || range::VARCHAR || id AS s "
        "FROM ods, range(500000) ORDER BY s DESC)"
    )
    params = csv_params(dwd={"sql": sort_1m})
    runner.run(params, Stage.LANDING_TO_ODS, memory_limit="64MB")

    with caplog.at_level("INFO", logger="app.executor.engine.duckdb_engine"):
        result = runner.run(params, Stage.ODS_TO_DWD, memory_limit="64MB")

    assert result.rows == 1  # the fresh database spills to the stage's scratch folder
    assert rows_of(runner.layer_dir("dwd")) == [{"n": 1_000_000}]
    moved = "runs on a fresh database: out of memory on the shared database"
    assert any(moved in r.getMessage() for r in caplog.records) == bool(
        runner.engine.small_input_bytes
    )
    assert not list(runner.warehouse.rglob(".tmp-*"))


# -- what keeps the stages of the shared database apart ----------------------------------------


@pytest.fixture
def shared() -> Iterator[SharedDatabase]:
    database = SharedDatabase()
    yield database
    database.close()


def test_a_connection_sees_only_its_own_input_and_temp_tables(shared: SharedDatabase) -> None:
    one = shared.connect(threads=1, memory_limit="64MB")
    two = shared.connect(threads=1, memory_limit="64MB")
    one.register("ods", pa.table({"id": [1, 2]}))
    one.execute("CREATE TEMP TABLE __strata_sql AS SELECT * FROM ods")
    two.register("dwd", pa.table({"id": [3]}))

    for sql in ("SELECT * FROM ods", "SELECT * FROM __strata_sql", "SELECT * FROM temp.t"):
        with pytest.raises(duckdb.CatalogException):
            two.execute(sql)
    with pytest.raises(duckdb.CatalogException):
        one.execute("SELECT * FROM dwd")
    assert one.execute("SELECT count(*) FROM __strata_sql").fetchone() == (2,)

    shared.release(one, threads=1, memory_limit="64MB")
    shared.release(two, threads=1, memory_limit="64MB")
    third = shared.connect(threads=1, memory_limit="64MB")
    views = third.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    tables = third.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    assert (views, tables) == ([], [])
    shared.release(third, threads=1, memory_limit="64MB")


def test_interrupting_one_connection_leaves_the_others_running(shared: SharedDatabase) -> None:
    one = shared.connect(threads=1, memory_limit="64MB")
    two = shared.connect(threads=1, memory_limit="64MB")
    one.interrupt()  # nothing runs on `one`: the interrupt must not reach `two` either
    assert two.execute("SELECT count(*) FROM range(1000)").fetchone() == (1000,)
    one.close()
    two.close()


def test_landing_readers_are_kept_for_the_most_recently_used_folders_only(
    shared: SharedDatabase, tmp_path: Path
) -> None:
    folders = [tmp_path / f"owner-{i}" for i in range(MAX_READERS + 3)]
    running = None
    for i, folder in enumerate(folders):
        folder.mkdir()
        (folder / "a.csv").write_text("n\n1\n")
        reader = shared.reader(folder, threads=1, memory_limit="64MB")
        if i == 0:
            running = reader  # a read still going on when its reader is dropped
            continue
        assert reader.execute(f"SELECT count(*) FROM '{folder / 'a.csv'}'").fetchone() == (1,)
        reader.close()

    kept = [key[2] for key in shared._databases if key[2] is not None]
    assert kept == folders[-MAX_READERS:]
    assert running is not None
    assert running.execute(f"SELECT n FROM '{folders[0] / 'a.csv'}'").fetchone() == (1,)
    running.close()


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH ':memory:' AS elsewhere",
        "CREATE TABLE main.kept AS SELECT 1 AS x",
        "CREATE VIEW main.kept AS SELECT 1 AS x",
        "CREATE SEQUENCE kept",
    ],
)
def test_a_stage_that_changed_the_shared_catalog_fails_and_the_database_is_discarded(
    shared: SharedDatabase, sql: str
) -> None:
    """The static checks allow only a SELECT; should one ever miss, this is the second guard."""
    con = shared.connect(threads=1, memory_limit="64MB")
    con.execute(sql)
    with pytest.raises(SandboxViolation, match="changed the shared catalog"):
        shared.release(con, threads=1, memory_limit="64MB")
    fresh = shared.connect(threads=1, memory_limit="64MB")
    assert fresh.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)
    assert fresh.execute(
        "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'elsewhere'"
    ).fetchone() == (0,)
    shared.release(fresh, threads=1, memory_limit="64MB")


def test_a_result_too_large_for_the_shared_database_is_written_on_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_engine_module, "MAX_RESULT_BYTES", 1)
    engine, written = run_job(tmp_path, "shared", CASES["checks"])
    _, fresh = run_job(tmp_path, "fresh", CASES["checks"])

    # each of the four started there, each went to a fresh database
    assert (engine.shared.connections, engine.shared.reads) == (4, 1)
    assert written["dwd counts"] == fresh["dwd counts"]
    assert sort(written["dwd rejects"]["rows"]) == sort(fresh["dwd rejects"]["rows"])


def test_stages_running_at_once_on_the_shared_database_each_see_their_own_job(
    runner: StageRunner,
) -> None:
    """Four jobs' DWD stages at once: every one reads its own ODS and keeps its own temp tables
    (the same names `__strata_sql`, `__strata_keep` in every connection)."""
    jobs = [f"job-{n}" for n in range(4)]
    for n, job in enumerate(jobs):
        write_csv(runner.landing / job / "f.csv", ["id", "v"], [[n, i] for i in range(50 + n)])
    layers = {"dwd": {"dedupe": {"keys": ["v"]}, "checks": [{"name": "c", "expr": "v <> '7'"}]}}

    def run(job: str) -> LayerResult:
        params = csv_params(f"{job}/*.csv", **layers)
        runner.engine.run_stage(
            runner.request(params, Stage.LANDING_TO_ODS, job), lambda _: None, CancelToken()
        )
        return runner.engine.run_stage(
            runner.request(params, Stage.ODS_TO_DWD, job), lambda _: None, CancelToken()
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(jobs, pool.map(run, jobs), strict=True))

    if runner.engine.small_input_bytes:
        assert runner.engine.shared.connections == 8  # each job's ODS and DWD
        assert runner.engine.shared.reads == 4
    for n, job in enumerate(jobs):
        assert (results[job].rows, results[job].rejects) == (49 + n, 1)
        assert {row["id"] for row in read_layer(runner.layer_dir("dwd", job)).to_pylist()} == {
            str(n)
        }


# -- small landing files: read by the landing reader, the rest on the shared database ----------


def land(landing: Path, files: dict[str, bytes | pa.Table]) -> None:
    for name, content in files.items():
        path = landing / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pa.Table):
            pq.write_table(content, path)
        else:
            path.write_bytes(content)


PARQUET_IN = pa.table({
    "id": pa.array([1, 2, 3], pa.int32()),
    "name": ["a", None, "c"],
    "price": pa.array([1.5, None, 2.25], pa.float64()),
    "day": pa.array([19000, 19001, None], pa.date32()),
})
# (files, source options, ods layer spec, sample_rows)
LANDING_CASES: dict[str, tuple[str, dict[str, bytes | pa.Table], dict[str, Any], dict[str, Any],
                               int | None]] = {
    "csv header false and delimiter": (
        "csv",
        {"in/a.csv": b"1;x;2024-01-01\n2;;2024-01-02\n", "in/b.csv": b"3;z;\n"},
        {"header": False, "delimiter": ";"},
        {},
        None,
    ),
    "csv typed by the sniffer": (
        "csv",
        {"in/a.csv": b"id,amount,ts,flag\n1,1.25,2024-01-01 10:00:00,true\n2,,,false\n"},
        {"header": True},
        {},
        None,
    ),
    "csv with sql, dedupe and checks": (
        "csv",
        {"in/a.csv": b"k,v\na,1\nb,2\na,3\nc,\n", "in/b.csv": b"k,v\nb,5\nd,6\n"},
        {"header": True},
        {
            "sql": "SELECT k, v, _source_file, _row_number FROM landing",
            "dedupe": {"keys": ["k"], "order_by": "v DESC NULLS LAST"},
            "checks": [{"name": "has_v", "expr": "v IS NOT NULL"}],
        },
        None,
    ),
    "jsonl": (
        "jsonl",
        {"in/a.jsonl": b'{"id": 1, "tags": ["x"], "o": {"n": 1.5}}\n{"id": 2, "tags": []}\n',
         "in/b.jsonl": b'{"id": 3, "extra": "e"}\n'},
        {},
        {},
        None,
    ),
    "jsonl of mixed types": (
        "jsonl",
        {"in/a.jsonl": b'{"a": 1, "m": 1}\n{"a": 2, "m": "x"}\n{"a": 3, "m": {"z": [1]}}\n'},
        {},
        {},
        None,
    ),
    "parquet": (
        "parquet",
        {"in/a.parquet": PARQUET_IN, "in/b.parquet": PARQUET_IN.slice(1)},
        {},
        {},
        None,
    ),
    "csv dry run": (
        "csv",
        {"in/a.csv": b"k\n1\n2\n3\n", "in/b.csv": b"k\n4\n5\n"},
        {"header": True},
        {},
        4,
    ),
    "parquet dry run": (
        "parquet",
        {"in/a.parquet": PARQUET_IN, "in/b.parquet": PARQUET_IN},
        {},
        {},
        4,
    ),
}


def run_landing(
    root: Path, path: str, source: dict[str, Any], files: dict[str, bytes | pa.Table],
    ods: dict[str, Any], sample_rows: int | None = None,
) -> tuple[DuckDBEngine, dict[str, Any]]:
    """The landing stage on `path`: what it wrote (schema, DuckDB and physical types, rows with
    lineage but `_ingested_at`), its rejects and counts."""
    engine = duckdb_engine(path)
    runner = StageRunner(root / "landing", root / path, engine)
    runner.warehouse.mkdir(parents=True)
    land(runner.landing, files)
    params = {"source": source, "layers": {"ods": ods} if ods else {}, "batch_size": 1000}
    try:
        result = runner.run(params, Stage.LANDING_TO_ODS, sample_rows=sample_rows)
    finally:
        engine.close()
    written = {"ods": describe(Path(result.path)),
               "counts": (result.rows, result.rejects, result.deduped, result.files)}
    if result.rejects_path:
        written["rejects"] = describe(Path(result.rejects_path))
    if not ods:
        ingested = read_layer(Path(result.path)).column("_ingested_at")
        assert pa.types.is_timestamp(ingested.type) and ingested.null_count == 0
    return engine, written


@pytest.mark.parametrize("case", list(LANDING_CASES))
def test_a_small_landing_stage_writes_the_same_layer_on_the_shared_and_on_a_fresh_database(
    tmp_path: Path, case: str
) -> None:
    fmt, files, options, ods, sample = LANDING_CASES[case]
    source = {"path": f"in/*.{fmt}", "format": fmt, "options": options}
    shared, on_shared = run_landing(tmp_path / "s", "shared", source, files, ods, sample)
    fresh, on_fresh = run_landing(tmp_path / "f", "fresh", source, files, ods, sample)

    assert (shared.shared.reads, shared.shared.connections) == (1, 1)
    assert (fresh.shared.reads, fresh.shared.connections) == (0, 0)
    assert on_shared.keys() == on_fresh.keys()
    for key, written in on_fresh.items():
        if key == "counts":
            assert on_shared[key] == written
            continue
        assert {**on_shared[key], "rows": None} == {**written, "rows": None}, key
        assert sort(on_shared[key]["rows"]) == sort(written["rows"]), key
    lineage = {(r["_source_file"], r["_row_number"]) for r in on_shared["ods"]["rows"]}
    assert len(lineage) == len(on_shared["ods"]["rows"])


RAGGED = b"k,v\n" + b"".join(b"%d,x\n" % i for i in range(50_000)) + b"1,2,3\n"
"""A ragged row past what the sniffer samples: an error while the file is read."""


@pytest.mark.parametrize(
    ("fmt", "files", "options"),
    [
        ("csv", {"in/a.csv": b"k,_row_number\na,1\n"}, {"header": True}),
        ("csv", {"in/a.csv": b"k,_SOURCE_FILE\na,1\n"}, {"header": True, "delimiter": ","}),
        ("jsonl", {"in/a.jsonl": b'{"k": 1, "_ingested_at": 2}\n'}, {}),
        ("parquet", {"in/a.parquet": pa.table({"_source_file": ["x"]})}, {}),
        ("csv", {"in/a.csv": RAGGED}, {"header": True}),
        ("csv", {"in/a.csv": RAGGED}, {"header": True, "all_varchar": True}),
        ("csv", {"in/a.csv": b"k,v\n1,2\n"}, {"header": True, "quote": "ab"}),  # a bad option
        ("jsonl", {"in/a.jsonl": b'{"k": 1}\nnot json\n'}, {}),
        ("parquet", {"in/a.parquet": b"not parquet"}, {}),
    ],
)
def test_a_bad_landing_file_fails_with_the_same_message_on_both_paths(
    tmp_path: Path, fmt: str, files: dict[str, bytes | pa.Table], options: dict[str, Any]
) -> None:
    source = {"path": f"in/*.{fmt}", "format": fmt, "options": options}
    messages = []
    for path in ("shared", "fresh"):
        with pytest.raises(StageFailed) as failed:
            run_landing(tmp_path / path, path, source, files, {})
        messages.append(str(failed.value))
        assert str(tmp_path) not in str(failed.value)
        assert not list((tmp_path / path).rglob(".tmp-*"))
    assert messages[0] == messages[1]


def test_landing_files_over_the_threshold_take_the_fresh_path(tmp_path: Path) -> None:
    content = b"k,v\n" + b"".join(b"%d,x\n" % i for i in range(100))
    source = {"path": "in/*.csv", "format": "csv", "options": {"header": True}}
    for limit, reads in ((len(content) - 1, 0), (len(content), 1)):
        engine = DuckDBEngine(small_input_bytes=limit)
        runner = StageRunner(tmp_path / "landing", tmp_path / f"wh-{limit}", engine)
        land(runner.landing, {"in/a.csv": content})
        result = runner.run({"source": source, "batch_size": 1000}, Stage.LANDING_TO_ODS)
        engine.close()
        assert result.rows == 100
        assert (engine.shared.reads, engine.shared.connections) == (reads, reads)


def test_user_sql_on_a_small_landing_stage_cannot_reach_the_landing_folder(
    tmp_path: Path,
) -> None:
    """The landing reader may read the landing folder; the user's SQL runs elsewhere, on the
    shared database that reaches no file, and is refused before it runs either way."""
    engine = DuckDBEngine()
    runner = StageRunner(tmp_path / "landing", tmp_path / "wh", engine)
    land(runner.landing, {"in/a.csv": b"k\n1\n", "other/secret.csv": b"s\nhidden\n"})
    secret = runner.landing / "other" / "secret.csv"
    con = engine.shared.connect(threads=1, memory_limit=None)
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_csv('{secret}')")
    engine.shared.release(con, threads=1, memory_limit=None)
    params = csv_params(ods={"sql": f"SELECT * FROM read_csv('{secret}')"})
    with pytest.raises(SandboxViolation):
        runner.run(params, Stage.LANDING_TO_ODS)
    engine.close()


def test_a_query_failing_after_its_first_rows_fails_as_on_a_fresh_database(
    tmp_path: Path,
) -> None:
    """An error while the result streams out as Arrow (a cast failing in a later batch) is
    DuckDB's error, reported as the fresh path reports it."""
    sql = "SELECT CAST(CASE WHEN id = '4999' THEN 'x' ELSE id END AS INTEGER) AS n FROM ods"
    messages = []
    for path in ("shared", "fresh"):
        runner = StageRunner(tmp_path / "landing", tmp_path / path, duckdb_engine(path))
        write_csv(runner.landing / "in" / "f.csv", ["id"], [[i] for i in range(5000)])
        params = csv_params(dwd={"sql": sql})
        runner.run(params, Stage.LANDING_TO_ODS)
        with pytest.raises(StageFailed) as failed:
            runner.run(params, Stage.ODS_TO_DWD)
        runner.engine.close()
        messages.append(str(failed.value))
        assert not list(runner.warehouse.rglob(".tmp-*"))
    assert "Could not convert string 'x' to INT32" in messages[1]
    assert messages[0] == messages[1]


def test_a_check_failing_after_the_first_rows_fails_as_a_statement_on_both_paths(
    tmp_path: Path,
) -> None:
    """A check evaluated while the kept rows stream out as Arrow (dedupe, then checks: the
    fresh path's one-pass split) that fails in a later batch is DuckDB's error on both paths."""
    check = "CAST(CASE WHEN n = '49999' THEN 'x' ELSE '1' END AS INTEGER) > 0"
    messages = []
    for path in DATABASE_PATHS:
        runner = StageRunner(tmp_path / "landing", tmp_path / path, duckdb_engine(path))
        write_csv(runner.landing / "in" / "f.csv", ["id"], [[i] for i in range(50000)])
        params = csv_params(dwd={"sql": "SELECT id AS n FROM ods",
                                 "dedupe": {"keys": ["n"], "order_by": "n"},
                                 "checks": [{"name": "odd", "expr": check}]})
        runner.run(params, Stage.LANDING_TO_ODS)
        with pytest.raises(StageFailed) as failed:
            runner.run(params, Stage.ODS_TO_DWD)
        runner.engine.close()
        messages.append(str(failed.value))
        assert not list(runner.warehouse.rglob(".tmp-*"))
    assert "Could not convert string 'x' to INT32" in messages[1]
    assert messages[0] == messages[1]


def test_a_landing_stage_cancelled_while_its_files_are_read_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = StageRunner(tmp_path / "landing", tmp_path / "wh", DuckDBEngine())
    write_csv(runner.landing / "in" / "f.csv", ["id"], [[i] for i in range(100)])
    cancel = CancelToken()
    fetch = duckdb_engine_module.fetch_result

    def cancelled_meanwhile(*args: Any, **kw: Any) -> Any:
        cancel.cancel()  # from the canceller's side: the reader's connection is interrupted
        return fetch(*args, **kw)

    monkeypatch.setattr(duckdb_engine_module, "fetch_result", cancelled_meanwhile)
    with pytest.raises(StageCancelled):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, cancel=cancel)
    runner.engine.close()

    assert runner.engine.shared.reads == 1
    assert not runner.layer_dir("ods").exists()
    assert not list(runner.warehouse.rglob(".tmp-*"))
