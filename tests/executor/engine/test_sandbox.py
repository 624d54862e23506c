"""User SQL may read only its own input layer and write nothing (DESIGN.md, `params`).

Two guards are tested: the static checks that refuse a stage before it touches a file (through
the engine, as a job would hit them), and the locked DuckDB connection underneath them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.domain.states import Stage
from app.executor.engine.base import SandboxViolation, StageFailed
from app.executor.engine.sandbox import (
    SqlGuard,
    lock_connection,
    open_connection,
    translate_error,
)
from app.executor.engine.shared_database import SharedDatabase
from tests.executor.engine.stages import (
    DATABASE_PATHS,
    StageRunner,
    csv_params,
    duckdb_engine,
    rows_of,
    tree,
    write_csv,
)

INPUT = "layer dwd sql may read only its input layer 'ods'"
ONE_SELECT = "layer dwd sql: only one SELECT statement is allowed, got"


@pytest.fixture(scope="module", params=DATABASE_PATHS)
def two_jobs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[StageRunner]:
    """job-1 and job-2, each with a finished ODS layer (shared: refused stages write nothing);
    once with the shared database for small inputs, once with a fresh database per stage."""
    root = tmp_path_factory.mktemp("sandbox").resolve()
    engine = duckdb_engine(request.param)
    runner = StageRunner(root / "landing", root / "warehouse", engine)
    runner.warehouse.mkdir()
    write_csv(runner.landing / "in" / "f.csv", ["id", "v"], [[1, "a"], [2, "b"]])
    for job in ("job-1", "job-2"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, job_id=job)
    yield runner
    engine.close()


@pytest.fixture
def root(two_jobs: StageRunner) -> Path:
    """The folder holding the landing and warehouse of `two_jobs` (and COPY targets)."""
    return two_jobs.landing.parent


def other_job_file(runner: StageRunner) -> str:
    return str(sorted(runner.layer_dir("ods", "job-2").glob("*.parquet"))[0])


# (sql with {tmp} = the test's folder and {other} = a Parquet file of job-2's ODS, message)
REFUSED_SQL = [
    ("SELECT * FROM read_csv('/etc/passwd')", f"{INPUT}: access to file '/etc/passwd' refused"),
    ("SELECT * FROM '/etc/passwd'", f"{INPUT}: access to file '/etc/passwd' refused"),
    ("SELECT * FROM read_text('/etc/passwd')", f"{INPUT}: access to file '/etc/passwd' refused"),
    (
        "SELECT * FROM read_blob('/etc/hostname')",
        f"{INPUT}: access to file '/etc/hostname' refused",
    ),
    ("SELECT * FROM glob('/etc/*')", f"{INPUT}: access to file '/etc/*' refused"),
    ("SELECT * FROM read_parquet('{other}')", f"{INPUT}: access to file '{{other}}' refused"),
    ("SELECT * FROM '{other}'", f"{INPUT}: access to file '{{other}}' refused"),
    (
        "SELECT * FROM read_parquet(['{other}', '/etc/x.parquet'])",
        f"{INPUT}: access to file '{{other}}' refused",
    ),
    ("SELECT * FROM sqlite_scan('{tmp}/x.db', 't')", f"{INPUT}: access to file '{{tmp}}/x.db'"),
    (
        "WITH ods AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM ods",
        f"{INPUT}: access to file '/etc/passwd' refused",
    ),
    (
        "SELECT * FROM ods WHERE id IN (SELECT 1 FROM read_csv('/etc/passwd'))",
        f"{INPUT}: access to file '/etc/passwd' refused",
    ),
    ("SELECT * FROM query_table('ods')", f"{INPUT}: table function 'query_table' refused"),
    ("SELECT * FROM query('SELECT 1')", f"{INPUT}: table function 'query' refused"),
    ("SELECT * FROM duckdb_settings()", f"{INPUT}: table function 'duckdb_settings' refused"),
    ("SELECT * FROM information_schema.tables", f"{INPUT}: access to table"),
    ("SELECT * FROM job_2.ods", f"{INPUT}: access to table 'job_2.ods' refused"),
    ("DESCRIBE ods", f"{INPUT}: DESCRIBE/SUMMARIZE/SHOW refused"),
    ("SELECT getvariable('x') FROM ods", "layer dwd sql: function 'getvariable' refused"),
    (
        "SELECT current_setting('temp_directory') AS t FROM ods",
        "layer dwd sql: function 'current_setting' refused",
    ),
    ("COPY (SELECT 1) TO '{tmp}/out.csv'", f"{ONE_SELECT} COPY"),
    ("COPY ods TO '{tmp}/out.parquet' (FORMAT parquet)", f"{ONE_SELECT} COPY"),
    ("ATTACH '{tmp}/x.db' AS x", f"{ONE_SELECT} ATTACH"),
    ("INSTALL httpfs", f"{ONE_SELECT} INSTALL"),
    ("LOAD httpfs", f"{ONE_SELECT} LOAD"),
    ("SET enable_external_access = true", f"{ONE_SELECT} SET"),
    ("RESET enable_external_access", f"{ONE_SELECT} RESET"),
    ("SET VARIABLE x = 1", f"{ONE_SELECT} SET"),
    ("PRAGMA enable_profiling", f"{ONE_SELECT} PRAGMA"),
    ("CREATE TABLE t AS SELECT 1", f"{ONE_SELECT} CREATE"),
    ("INSERT INTO ods VALUES (1, 'x')", f"{ONE_SELECT} INSERT"),
    ("DROP VIEW ods", f"{ONE_SELECT} DROP"),
    ("UPDATE ods SET v = 'x'", f"{ONE_SELECT} UPDATE"),
    ("DELETE FROM ods", f"{ONE_SELECT} DELETE"),
    ("EXPORT DATABASE '{tmp}/export'", f"{ONE_SELECT} EXPORT"),
    ("CALL pragma_version()", f"{ONE_SELECT} CALL"),
    ("EXPLAIN SELECT * FROM ods", f"{ONE_SELECT} EXPLAIN"),
    ("SELECT 1; SELECT 2", f"{ONE_SELECT} 2 statements (SELECT, SELECT)"),
    ("SELECT * FROM ods; COPY ods TO '{tmp}/x.csv'", f"{ONE_SELECT} 2 statements (SELECT, COPY)"),
    ("-- nothing but a comment", f"{ONE_SELECT} nothing"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED_SQL, ids=[s for s, _ in REFUSED_SQL])
def test_layer_sql_may_only_select_from_its_input(
    two_jobs: StageRunner, root: Path, sql: str, message: str
) -> None:
    names = {"tmp": str(root), "other": other_job_file(two_jobs)}
    before = tree(root)

    with pytest.raises(SandboxViolation) as refused:
        two_jobs.run(csv_params(dwd={"sql": sql.format(**names)}), Stage.ODS_TO_DWD)

    assert message.format(**names) in str(refused.value)
    assert tree(root) == before  # nothing written: no output, no temp folder, no COPY target


REFUSED_CHECKS = [
    (
        "1=1) ; COPY (SELECT 1) TO '{tmp}/x.csv' ; SELECT (1",
        "layer dwd check 'c': must be a single SQL expression; statements are refused",
    ),
    ("true; COPY ods TO '{tmp}/x.csv'", "layer dwd check 'c': must be a single SQL expression"),
    (
        "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
        "layer dwd check 'c' may read only its input layer 'ods': access to file '/etc/passwd'",
    ),
    (
        "id IN (SELECT id FROM '{other}')",
        "layer dwd check 'c' may read only its input layer 'ods': access to file '{other}'",
    ),
    ("current_setting('threads') > 0", "layer dwd check 'c': function 'current_setting' refused"),
]


@pytest.mark.parametrize(("expr", "message"), REFUSED_CHECKS, ids=[e for e, _ in REFUSED_CHECKS])
def test_a_check_is_one_expression_that_reads_only_the_input(
    two_jobs: StageRunner, root: Path, expr: str, message: str
) -> None:
    names = {"tmp": str(root), "other": other_job_file(two_jobs)}
    before = tree(root)
    layer = {"checks": [{"name": "c", "expr": expr.format(**names)}]}

    with pytest.raises(SandboxViolation) as refused:
        two_jobs.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)

    assert message.format(**names) in str(refused.value)
    assert tree(root) == before


REFUSED_ORDER_BY = [
    (
        "id) = 1; COPY (SELECT 1) TO '{tmp}/x.csv'; SELECT row_number() OVER (ORDER BY id",
        "layer dwd dedupe order_by: must be an ORDER BY list; statements are refused",
    ),
    (
        "(SELECT max(line) FROM read_text('/etc/passwd') t(line))",
        "layer dwd dedupe order_by may read only its input layer 'ods': access to file "
        "'/etc/passwd'",
    ),
]


@pytest.mark.parametrize(
    ("order_by", "message"), REFUSED_ORDER_BY, ids=[o for o, _ in REFUSED_ORDER_BY]
)
def test_a_dedupe_order_by_is_one_order_list_that_reads_only_the_input(
    two_jobs: StageRunner, root: Path, order_by: str, message: str
) -> None:
    before = tree(root)
    layer = {"dedupe": {"keys": ["id"], "order_by": order_by.format(tmp=root)}}

    with pytest.raises(SandboxViolation) as refused:
        two_jobs.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)

    assert message in str(refused.value)
    assert tree(root) == before


@pytest.mark.parametrize(
    ("what", "text"),
    [
        ("check", "id = 1) AS x FROM __strata_input UNION ALL SELECT (1"),
        ("check", "id >"),
        ("order_by", "id LIMIT 1"),
    ],
)
def test_malformed_expressions_fail_the_stage(
    two_jobs: StageRunner, root: Path, what: str, text: str
) -> None:
    before = tree(root)
    if what == "check":
        layer: dict[str, Any] = {"checks": [{"name": "c", "expr": text}]}
    else:
        layer = {"dedupe": {"keys": ["id"], "order_by": text}}
    with pytest.raises(StageFailed, match=r"layer dwd (check 'c'|dedupe order_by)"):
        two_jobs.run(csv_params(dwd=layer), Stage.ODS_TO_DWD)
    assert tree(root) == before


ACCEPTED_SQL = [
    "SELECT * FROM ods",
    "FROM ods SELECT id",
    "SELECT * FROM main.ods",
    "SELECT o.* FROM ods AS o JOIN ods AS p USING (id)",
    "WITH a AS (SELECT * FROM ods), b AS (SELECT * FROM a) SELECT * FROM b",
    "SELECT id, v, 'a;b -- c' AS s FROM ods;",
    "SELECT id FROM ods -- a trailing comment",
    "SELECT id FROM ods /* a comment */ ;",
    "SELECT * FROM ods, range(3) r(x) WHERE x < 2",
    "SELECT unnest([1, 2]) AS x, id FROM ods",
    "SELECT id, row_number() OVER (ORDER BY id) AS n FROM ods QUALIFY n = 1",
    "SELECT id FROM ods UNION ALL SELECT id FROM ods ORDER BY id",
    "SELECT (SELECT max(id) FROM ods) AS m FROM ods",
]


@pytest.mark.parametrize("sql", ACCEPTED_SQL)
def test_ordinary_selects_over_the_input_are_accepted(sql: str) -> None:
    checked = SqlGuard("dwd", "ods").select(sql)
    assert not checked.text.endswith(";")


def test_an_accepted_select_with_comments_and_semicolons_runs(two_jobs: StageRunner) -> None:
    sql = "SELECT id, v, 'x;y' AS s FROM ods -- keep all\n;"
    result = two_jobs.run(csv_params(dwd={"sql": sql}), Stage.ODS_TO_DWD)
    assert result.rows == 2
    assert {r["s"] for r in rows_of(two_jobs.layer_dir("dwd"))} == {"x;y"}


def test_ods_sql_reads_the_landing_relation(runner: StageRunner) -> None:
    write_csv(runner.landing / "in" / "f.csv", ["id"], [[1], [2]])
    params = csv_params(ods={"sql": "SELECT *, 1 AS one FROM landing WHERE id = '2'"})
    assert runner.run(params, Stage.LANDING_TO_ODS).rows == 1
    refused = csv_params(
        ods={"sql": "SELECT * FROM read_csv('{}')".format(runner.landing / "in" / "f.csv")}
    )
    with pytest.raises(
        SandboxViolation, match="layer ods sql may read only its input relation 'landing'"
    ):
        runner.run(refused, Stage.LANDING_TO_ODS)


# -- the locked connection (what holds even if a static check missed something) ---------------


@pytest.fixture(params=DATABASE_PATHS)
def locked(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A locked connection whose input `ods` is one Parquet file, plus other paths: a fresh
    database whose output is one folder, or a connection of the shared database (no file at
    all: its input is registered from Arrow)."""
    mine = tmp_path / "job-1" / "ods"
    other = tmp_path / "job-2" / "ods"
    out = tmp_path / "job-1" / ".tmp-dwd" / "out"
    for folder in (mine, other, out, tmp_path / "spill"):
        folder.mkdir(parents=True)
    plain = duckdb.connect()
    for folder in (mine, other):
        plain.execute(f"COPY (SELECT range AS id FROM range(5)) TO '{folder}/part-00000.parquet'")
    plain.close()
    if request.param == "shared":
        shared = SharedDatabase()
        con = shared.connect(threads=2, memory_limit="32MB")
        con.register("ods", pq.read_table(mine / "part-00000.parquet"))
        yield con, tmp_path, mine, other, out
        con.close()
        shared.close()
        return
    con = open_connection(
        threads=2,
        memory_limit="32MB",
        temp_directory=tmp_path / "spill",
        preserve_insertion_order=False,
        allowed_paths=[mine / "part-00000.parquet"],
        allowed_directories=[out.parent],
    )
    con.execute(
        f"CREATE TEMP VIEW ods AS SELECT * FROM read_parquet(['{mine}/part-00000.parquet'])"
    )
    lock_connection(con)
    yield con, tmp_path, mine, other, out
    con.close()


LOCKED_REFUSALS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{other}/part-00000.parquet')",
    "SELECT * FROM read_parquet('{mine}/*.parquet')",
    "SELECT * FROM read_parquet('{out}/../../../job-2/ods/part-00000.parquet')",
    "COPY (SELECT 1) TO '{tmp}/escaped.csv'",
    "ATTACH '{tmp}/x.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET allowed_directories = ['/']",
    "SET lock_configuration = false",
    "PRAGMA enable_profiling",
    "SELECT * FROM secret_table",  # a Python variable of this frame: no replacement scan
    "SELECT * FROM duckdb_settings() WHERE name = 'x' AND getenv('HOME') IS NOT NULL",
]


@pytest.mark.parametrize("sql", LOCKED_REFUSALS)
def test_the_locked_connection_refuses_other_files_writes_and_settings(
    locked: Any, sql: str
) -> None:
    con, tmp, mine, other, out = locked
    secret_table = pa.table({"x": [1]})  # noqa: F841 - must stay invisible to SQL
    before = tree(tmp)
    with pytest.raises(duckdb.Error):
        con.execute(sql.format(tmp=tmp, mine=mine, other=other, out=out)).fetchall()
    assert tree(tmp) == before


def test_the_locked_connection_reads_its_input_and_writes_its_output(locked: Any) -> None:
    con, tmp, mine, _, out = locked
    assert con.execute("SELECT count(*) FROM ods").fetchone() == (5,)
    own_file = f"SELECT count(*) FROM read_parquet('{mine}/part-00000.parquet')"
    own_output = f"COPY (SELECT * FROM ods) TO '{out}/data_0.parquet' (FORMAT parquet)"
    if locked_path(con) == "shared":  # no file at all: the engine reads and writes with pyarrow
        before = tree(tmp)
        for sql in (own_file, own_output):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        assert tree(tmp) == before
        return
    assert con.execute(own_file).fetchone() == (5,)
    con.execute(own_output)
    assert (out / "data_0.parquet").is_file()


SORT_1M = (
    "SELECT count(*) FROM (SELECT repeat('x', 40) || range::VARCHAR AS s "
    "FROM range(1000000) ORDER BY s DESC)"
)


def test_the_locked_connection_spills_to_its_temp_directory(locked: Any) -> None:
    con, *_ = locked
    if locked_path(con) == "shared":  # no spill folder: the engine runs such a stage afresh
        with pytest.raises(duckdb.OutOfMemoryException):
            con.execute(SORT_1M).fetchone()
        return
    assert con.execute(SORT_1M).fetchone() == (1_000_000,)
    # the same sort in the same memory without a temp directory does not fit
    plain = duckdb.connect()
    plain.execute("SET memory_limit = '32MB'; SET temp_directory = ''")
    with pytest.raises(duckdb.OutOfMemoryException):
        plain.execute(SORT_1M).fetchone()
    plain.close()


def locked_path(con: duckdb.DuckDBPyConnection) -> str:
    """Which database the `locked` connection is of: the shared one allows no file at all."""
    row = con.execute("SELECT value FROM duckdb_settings() WHERE name = 'allowed_paths'")
    return "shared" if row.fetchone() == ("[]",) else "fresh"


def test_a_permission_error_becomes_a_sandbox_violation_without_service_paths(
    tmp_path: Path,
) -> None:
    exc = duckdb.PermissionException(
        f'Permission Error: Cannot access file "{tmp_path}/warehouse/job-2/ods/p.parquet"'
    )
    error = translate_error(
        exc,
        label="layer dwd sql",
        input_name="ods",
        replacements=[(f"{tmp_path}/warehouse/", "warehouse/")],
    )
    assert isinstance(error, SandboxViolation)
    assert str(error) == (
        "layer dwd sql may read only its input layer 'ods': "
        "access to file 'warehouse/job-2/ods/p.parquet' refused"
    )
