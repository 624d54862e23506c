"""Choosing the executor's engine from the settings, and refusing one that cannot work here.

A missing package or an unreachable Spark master is not transient: retrying a stage four times
only delays the same failure. So the executor checks both before it accepts any task and refuses
to start (`strata executor` exits 2 with the reason and what to install) instead of failing every
job later. What is checked:

* `STRATA_ENGINE` names a known engine;
* the Spark engine's packages import (`pyspark` and `sqlglot`; for Spark Connect also `grpc`,
  `pandas` and `google.protobuf`, what `pyspark[connect]` brings), and Java is on the PATH for a
  classic (non-Connect) master;
* a `spark://` or `sc://` master answers a TCP connection on its port.

The engine handed to the runner is wrapped in a `GuardedEngine` (`app.executor.guard`): memory,
disk and scratch-folder rules that hold whatever the engine.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
from collections.abc import Callable
from urllib.parse import urlparse

from app.executor.engine.base import Engine
from app.executor.guard import GuardedEngine, parse_free_floor
from app.settings import Settings

SPARK_EXTRA = "pip install 'strata[spark]'"
CONNECT_EXTRA = "pip install 'strata[spark,connect]'"
SPARK_MODULES = ("pyspark", "sqlglot")
CONNECT_MODULES = ("grpc", "pandas", "google.protobuf")
MASTER_PORTS = {"spark": 7077, "sc": 15002}
CONNECT_TIMEOUT = 5.0


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run a stage in this process; the message says why and what
    to do about it."""


def load_engine(settings: Settings) -> Engine:
    """The engine `STRATA_ENGINE` names, checked (see the module docstring) and guarded."""
    engine: Engine
    if settings.engine == "duckdb":
        from app.executor.engine.duckdb_engine import DuckDBEngine

        engine = DuckDBEngine()
    elif settings.engine == "spark":
        check_spark(settings.spark_master)
        from app.executor.engine.spark_engine import SparkEngine

        engine = SparkEngine(master=settings.spark_master, conf=spark_conf(settings.spark_conf))
    else:
        raise EngineUnavailable(
            f"STRATA_ENGINE={settings.engine!r} is not an engine; choose duckdb or spark")
    try:
        floor = parse_free_floor(settings.min_free_disk)
    except ValueError as exc:
        raise EngineUnavailable(f"STRATA_MIN_FREE_DISK: {exc}") from None
    return GuardedEngine(engine, min_free=floor)


def spark_conf(text: str) -> dict[str, str]:
    """`key=value,key=value` (STRATA_SPARK_CONF) as a mapping; items without `=` are ignored."""
    pairs = (item.strip().split("=", 1) for item in text.split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def check_spark(
    master: str,
    *,
    find_module: Callable[[str], bool] | None = None,
    connect: Callable[[str, int], None] | None = None,
) -> None:
    """Raise `EngineUnavailable` unless the Spark engine can reach `master` from here."""
    found = find_module or _importable
    is_connect = master.startswith("sc://")
    missing = [name for name in SPARK_MODULES if not found(name)]
    if missing:
        raise EngineUnavailable(
            f"STRATA_ENGINE=spark needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {SPARK_EXTRA}")
    if is_connect:
        missing = [name for name in CONNECT_MODULES if not found(name)]
        if missing:
            raise EngineUnavailable(
                f"STRATA_SPARK_MASTER={master} (Spark Connect) needs {', '.join(missing)}, "
                f"not installed: {CONNECT_EXTRA}")
    elif shutil.which("java") is None:
        raise EngineUnavailable(
            "STRATA_ENGINE=spark needs a Java 17+ runtime on the PATH (`java -version`)")
    scheme = master.split("://", 1)[0] if "://" in master else ""
    if scheme in MASTER_PORTS:
        _check_reachable(master, _master_addresses(master, MASTER_PORTS[scheme]),
                         connect or _connect)


def _check_reachable(
    master: str, addresses: list[tuple[str, int]], connect: Callable[[str, int], None]
) -> None:
    """One answering address is enough (`spark://a:7077,b:7077` lists standby masters)."""
    errors = []
    for host, port in addresses:
        try:
            connect(host, port)
            return
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise EngineUnavailable(
        f"the Spark master {master} does not answer ({'; '.join(errors)}); "
        "start it or fix STRATA_SPARK_MASTER")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def _master_addresses(master: str, default_port: int) -> list[tuple[str, int]]:
    """`spark://a:7077,b:7077` (standby masters) or `sc://host:15002/;token=…` as (host, port)."""
    rest = master.split("://", 1)[1]
    addresses = []
    for item in rest.split("/", 1)[0].split(","):
        parsed = urlparse(f"//{item}")
        addresses.append((parsed.hostname or "localhost", parsed.port or default_port))
    return addresses


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
        pass
