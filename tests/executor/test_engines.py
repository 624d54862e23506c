"""An engine that cannot work here is refused before the executor takes a task: a missing Spark
package or an unreachable master stops `strata executor` (and the embedded `strata serve`) with
what to install, and a stage that meets one later fails once, with a reason, never retried."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.executor.engine.base import StageFailed
from app.executor.engines import EngineUnavailable, check_spark, load_engine, spark_conf
from app.executor.guard import GuardedEngine
from app.settings import Settings
from tests.executor.test_executor_api import body, finished, running_executor
from tests.executor.test_runner import FailingEngine
from tests.servers import free_port

# Runs `strata ARGS` with the named modules made unimportable, the way a missing package is:
# a finder first on sys.meta_path refuses them (and everything under them).
_HIDING = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    HIDDEN = set(sys.argv[1].split(","))

    class Missing(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    for name in list(sys.modules):
        if name.split(".")[0] in HIDDEN:
            del sys.modules[name]
    from app.cli import cli
    cli(sys.argv[2:])
""")


def _strata_without(
    hidden: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _HIDING, hidden, *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("command", "hidden"), [("executor", "sqlglot"), ("serve", "pyspark")])
def test_a_missing_spark_package_refuses_to_start_and_says_what_to_install(
    command: str, hidden: str, database_url: str, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "STRATA_ENGINE": "spark", "STRATA_DATABASE_URL": database_url,
           "STRATA_PORT": str(free_port()), "STRATA_WAREHOUSE_DIR": str(tmp_path / "wh"),
           "STRATA_LANDING_DIR": str(tmp_path / "land")}
    done = _strata_without(hidden, command, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"needs {hidden}" in done.stderr
    assert "pip install 'strata[spark]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_check_passes_where_spark_is_installed() -> None:
    code = textwrap.dedent("""
        from app.executor.engines import check_spark
        check_spark("local[1]")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("master", ["spark://127.0.0.1:{port}", "sc://127.0.0.1:{port}"])
def test_an_unreachable_master_is_refused(master: str) -> None:
    url = master.format(port=free_port())  # nothing listens there
    with pytest.raises(EngineUnavailable, match="does not answer") as caught:
        check_spark(url, find_module=lambda name: True)
    assert url in str(caught.value)


def test_one_answering_standby_master_is_enough() -> None:
    tried: list[tuple[str, int]] = []

    def connect(host: str, port: int) -> None:
        tried.append((host, port))
        if host == "a":
            raise ConnectionRefusedError("refused")

    check_spark("spark://a:7077,b:7078", find_module=lambda name: True, connect=connect)
    assert tried == [("a", 7077), ("b", 7078)]


def test_spark_connect_needs_its_own_packages() -> None:
    with pytest.raises(EngineUnavailable, match=r"grpc.*strata\[spark,connect\]"):
        check_spark("sc://127.0.0.1:15002", find_module=lambda name: name != "grpc")


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(EngineUnavailable, match="choose duckdb or spark"):
        load_engine(Settings(_env_file=None, engine="flink"))  # type: ignore[call-arg]


def test_a_bad_disk_floor_is_refused_naming_the_setting() -> None:
    with pytest.raises(EngineUnavailable, match=r"STRATA_MIN_FREE_DISK.*not a size"):
        load_engine(Settings(_env_file=None, min_free_disk="plenty"))  # type: ignore[call-arg]


def test_spark_settings_come_from_settings_not_only_the_environment() -> None:
    assert spark_conf("spark.executor.memory=1g, spark.sql.shuffle.partitions=4,junk") == {
        "spark.executor.memory": "1g", "spark.sql.shuffle.partitions": "4"}


async def test_a_stage_that_finds_the_spark_engine_broken_fails_with_a_reason(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """What the watcher reads to fail the job at once instead of retrying it."""
    broken = FailingEngine(StageFailed(
        "the Spark engine needs sqlglot: install Strata with the 'spark' extra"))
    async with running_executor(sessions, GuardedEngine(broken), tmp_path) as client:
        task_id = (await client.post("/v1/tasks", json=body())).json()["task_id"]
        done = await finished(client, task_id)
    assert done["status"] == "failed"
    assert done["result"] == {"reason": "EngineUnavailable", "retryable": False}
    assert done["reason"] == "EngineUnavailable" and done["retryable"] is False
    assert "needs sqlglot" in done["error"]
