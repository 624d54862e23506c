"""What every benchmark shares: paths, the service as a real process, /proc readings, statistics.

Process figures come from /proc so that no extra dependency is needed in the project:
CPU seconds are utime + stime of `/proc/<pid>/stat` (plus reaped children), the peak RSS is
`VmHWM` of `/proc/<pid>/status`, and writing `5` to `/proc/<pid>/clear_refs` resets that peak to
the current RSS, so one long-running service can be measured run by run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
STOPPED = ("Succeeded", "Failed", "Cancelled")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# the versions the refdata README was measured with; duckdb is pinned to the project's own
REF_PINS = {"polars": "2.1.0", "pyarrow": "26.0.1", "numpy": "2.4.6"}
REF_MODULES = ("duckdb", "polars", "pyarrow", "numpy")
SERVICE_PACKAGES = ("duckdb", "fastapi", "starlette", "uvicorn", "uvloop", "httptools",
                    "sqlalchemy", "asyncpg", "aiosqlite", "pydantic", "httpx")


# --- paths --------------------------------------------------------------------------------------


def refdata_dir() -> Path:
    """`REFDATA`, default `../shared/refdata` relative to the repository."""
    value = os.environ.get("REFDATA")
    return Path(value).resolve() if value else (REPO / ".." / "shared" / "refdata").resolve()


def relative_to_repo(path: Path) -> str:
    """A path as the write-up shows it: relative to the repository, never this machine's."""
    return os.path.relpath(path, REPO)


def bench_dir() -> Path:
    """Where data, warehouses, logs and raw results go: `BENCH_DIR`, default `data/bench`."""
    value = os.environ.get("BENCH_DIR")
    return Path(value).resolve() if value else REPO / "data" / "bench"


def ref_venv_dir() -> Path:
    value = os.environ.get("BENCH_REF_VENV")
    return Path(value).resolve() if value else bench_dir() / "venv-ref"


def ref_python(install: bool) -> tuple[Path | None, str]:
    """The baselines' interpreter (duckdb, polars, pyarrow, numpy; never in the project venv).

    Created with pip when missing and `install` is true. Returns (python, why-not).
    """
    venv = ref_venv_dir()
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import " + ", ".join(REF_MODULES)]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, ""
    if not install:
        return None, f"no baseline venv at {venv} (run without --no-install to create it)"
    pins = [f"duckdb=={importlib.metadata.version('duckdb')}",
            *(f"{name}=={version}" for name, version in REF_PINS.items()), "py-spy"]
    log = bench_dir() / "venv-ref.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", *pins]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return None, f"could not create the baseline venv ({' '.join(step)}; see {log})"
    return python, ""


def ref_versions(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            f"{list(REF_MODULES)!r}}}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


# --- the machine ----------------------------------------------------------------------------


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, e.g. '1.02 0.87 0.60'."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def load1() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def machine() -> dict[str, Any]:
    mem = "?"
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in SERVICE_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        wrk_version = (out.stdout + out.stderr).split("\n", 1)[0].strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)), "memory": mem, "cpu": model,
        "kernel": platform.release(), "python": platform.python_version(),
        "strata": importlib.metadata.version("strata"), "packages": versions, "wrk": wrk_version,
    }


# --- processes ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its reaped children."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return math.nan
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (all of /proc/stat's first line but idle and
    iowait): what the whole machine did, PostgreSQL and the benchmark's own clients included."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return math.nan
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def postgres_cpu() -> float:
    """CPU seconds of the local PostgreSQL server: its postmaster and every backend, live or
    reaped; NaN when its pid file cannot be read."""
    for pid_file in sorted(Path("/var/run/postgresql").glob("*.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return tree_cpu(int(pid_file.read_text().split()[0]))
    return math.nan


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    found.append(int(child))
                    todo.append(int(child))
    return found


def status_kib(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` figure in KiB (VmHWM, VmRSS), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5) for the process and its children."""
    ok = True
    for p in [pid, *descendants(pid)]:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def tree_peak_mib(pid: int) -> float:
    """Peak RSS of the process plus each child's peak (an upper bound for the tree), MiB."""
    return sum(status_kib(p, "VmHWM") for p in [pid, *descendants(pid)]) / 1024


def tree_rss_mib(pid: int) -> float:
    return sum(status_kib(p, "VmRSS") for p in [pid, *descendants(pid)]) / 1024


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the process's main thread (the event loop) and of all its other threads
    (DuckDB stage threads and DuckDB's own workers, SQLite threads, thread pools)."""
    out = {"main": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        out["main" if task.name == str(pid) else "other"] += cpu
    return out


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


@dataclass
class Timed:
    """One child process run: wall and CPU seconds, peak RSS, its output."""

    wall: float
    cpu: float
    peak_mib: float
    returncode: int
    stdout: str
    load_before: str
    load_after: str


def run_timed(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 3600,
              env: dict[str, str] | None = None) -> Timed:
    """Run a command to its end; wall, CPU (user + sys) and peak RSS from wait4's rusage."""
    load_before = loadavg()
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Timed(wall=wall, cpu=usage.ru_utime + usage.ru_stime, peak_mib=usage.ru_maxrss / 1024,
                 returncode=proc.returncode, stdout=text, load_before=load_before,
                 load_after=loadavg())


# --- the service as a real process ----------------------------------------------------------


def free_port() -> int:
    from tests.servers import free_port as pick

    return pick()


def service_env(database_url: str, root: Path, **extra: str | float | int) -> dict[str, str]:
    """The service's settings: production defaults except paths, log level and `extra`."""
    env = {
        "STRATA_DATABASE_URL": database_url,
        "STRATA_LANDING_DIR": str(root / "landing"),
        "STRATA_WAREHOUSE_DIR": str(root / "warehouse"),
        "STRATA_HOST": "127.0.0.1",
        "STRATA_LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


# limits that would turn a benchmark's bursts into 429s: lifted, and said so in the report
NO_LIMITS = {"STRATA_MAX_JOBS_IN_FLIGHT": 1_000_000, "STRATA_CREATES_PER_MINUTE": 10_000_000}


@dataclass
class Service:
    """`strata serve` in its own process (tests.processes.StrataProcess), on a free port."""

    root: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.proc is not None
        return int(self.proc.proc.pid)

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    async def start(self) -> Service:
        from tests.processes import StrataProcess

        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = StrataProcess("serve", self.env, self.port, self.log)
        self.proc.start()
        await self.proc.ready(timeout=60)
        return self

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(self.proc.stop)
            self.proc = None


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


# --- databases ------------------------------------------------------------------------------


def pg_admin_dsn() -> str:
    from tests.databases import PG_ADMIN_DSN

    return PG_ADMIN_DSN


async def pg_available() -> tuple[bool, str]:
    import asyncpg

    try:
        conn = await asyncpg.connect(pg_admin_dsn(), timeout=3)
    except Exception as exc:
        return False, f"PostgreSQL at {pg_admin_dsn()} is not reachable ({type(exc).__name__})"
    try:
        version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return True, version


async def reachable_backends(backends: list[str]) -> tuple[list[str], dict[str, str]]:
    """The backends a benchmark can run on here, and why any was skipped."""
    if "postgres" not in backends:
        return list(backends), {}
    ok, why = await pg_available()
    if ok:
        return list(backends), {}
    return [b for b in backends if b != "postgres"], {"postgres": why}


class Databases:
    """Fresh migrated databases: a SQLite file per run, or a PostgreSQL database per run (copied
    from a template migrated once), all dropped at `close()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pg: Any = None
        self._sqlite: Any = None

    def sqlite(self, folder: Path) -> str:
        from tests.databases import SqliteDatabases

        if self._sqlite is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._sqlite = SqliteDatabases(self.root)
            self._sqlite.setup()
        folder.mkdir(parents=True, exist_ok=True)
        return str(self._sqlite.new(folder))

    def postgres(self) -> str:
        from tests.databases import PostgresDatabases

        if self._pg is None:
            self._pg = PostgresDatabases()
            self._pg.setup()
        return str(self._pg.new())

    def new(self, backend: str, folder: Path) -> str:
        return self.postgres() if backend == "postgres" else self.sqlite(folder)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.teardown()
            self._pg = None


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- HTTP helpers ---------------------------------------------------------------------------


def upload(base_url: str, files: Iterable[Path], folder: str) -> float:
    """PUT each file to /v1/landing/<folder>/<name>, streamed; returns the seconds it took."""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for path in files:
            with path.open("rb") as handle:
                response = client.put(f"/v1/landing/{folder}/{path.name}", content=handle)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"upload of {path.name}: {response.status_code} "
                                   f"{response.text[:300]}")
    return time.perf_counter() - started


TINY_ROWS = 20


def tiny_csv() -> bytes:
    return ("n,kind\n" + "".join(f"{i},{'even' if i % 2 == 0 else 'odd'}\n"
                                 for i in range(TINY_ROWS))).encode()


def tiny_job(name: str = "tiny", *, suspend: bool = False) -> dict[str, Any]:
    """A job whose four stages each move 20 rows: what is left is the service's own cost."""
    return {"name": name, "suspend": suspend, "params": {
        "source": {"path": "tiny/numbers.csv", "format": "csv", "options": {"header": True}},
        "retries": 0}}


async def land_tiny(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/landing/tiny/numbers.csv", content=tiny_csv())
    if response.status_code not in (200, 201):
        raise RuntimeError(f"landing the tiny file: {response.status_code} {response.text}")


async def poll(predicate: Callable[[], Any], *, within: float, interval: float,
               what: str) -> Any:
    """Call `predicate` (async) until it returns something truthy; bounded by `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


# --- statistics -----------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    pos = q * (len(data) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def spread(values: Sequence[float]) -> dict[str, float]:
    data = [v for v in values if not math.isnan(v)]
    if not data:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(data), "min": min(data), "max": max(data),
            "n": len(data)}


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


@contextlib.contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started
