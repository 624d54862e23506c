"""A tiny Spark standalone cluster on this machine, from what the `pyspark` package ships: one
master, two workers and (on demand) a Spark Connect server, each a process bound to 127.0.0.1
with little memory, all stopped (process group and all) when done.

    python -m tests.spark_cluster        # `make spark-cluster`: runs until Ctrl-C

prints the `spark://` and `sc://` URLs to give `STRATA_SPARK_MASTER`. The tests use
`SparkCluster` as a fixture (tests/executor/engine/test_spark_cluster.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

WORKERS = 2
WORKER_CORES = 2  # logical: the two workers share this machine's cores
WORKER_MEMORY = "1g"
DAEMON_MEMORY = "256m"
EXECUTOR_MEMORY = "512m"
START_TIMEOUT = 120.0


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def application_conf() -> dict[str, str]:
    """What an application on this cluster asks for: small executors, loopback driver."""
    return {
        "spark.executor.memory": EXECUTOR_MEMORY,
        "spark.executor.cores": "1",
        "spark.cores.max": str(WORKERS),  # one executor on each worker
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
    }


class SparkCluster:
    """`with SparkCluster(root) as cluster:` — master and workers up; `start_connect()` adds the
    Connect server. Logs and work folders live under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.master_port = free_port()
        self.connect_port = free_port()
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._connect: subprocess.Popen[bytes] | None = None

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def connect_url(self) -> str:
        return f"sc://127.0.0.1:{self.connect_port}"

    def __enter__(self) -> SparkCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn("master", [
            "bin/spark-class", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(self.master_port), "--webui-port", str(free_port())])
        self._wait_port(self.master_port, "master")
        for n in range(WORKERS):
            work = self.root / f"worker-{n}"
            work.mkdir(exist_ok=True)
            self._spawn(f"worker-{n}", [
                "bin/spark-class", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--port", str(free_port()), "--webui-port", str(free_port()),
                "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
                "--work-dir", str(work), self.master_url])
        self._wait_log(f"worker-{WORKERS - 1}", "Successfully registered with master")
        self._wait_log("worker-0", "Successfully registered with master")

    def start_connect(self) -> str:
        """Start the Spark Connect server (a driver on this cluster); returns its `sc://` URL."""
        if self._connect is None:
            conf = {**application_conf(), "spark.connect.grpc.binding.port": str(self.connect_port),
                    "spark.connect.grpc.binding.address": "127.0.0.1",
                    "spark.sql.session.timeZone": "UTC"}
            args = ["bin/spark-submit", "--class",
                    "org.apache.spark.sql.connect.service.SparkConnectServer",
                    "--name", "strata-connect", "--master", self.master_url,
                    "--driver-memory", EXECUTOR_MEMORY]
            for key, value in conf.items():
                args += ["--conf", f"{key}={value}"]
            self._connect = self._spawn("connect", args, daemon=False)
            self._wait_port(self.connect_port, "connect")
        return self.connect_url

    def stop_connect(self) -> None:
        if self._connect is not None:
            self._terminate("connect", self._connect)
            self._procs = [(n, p) for n, p in self._procs if p is not self._connect]
            self._connect = None

    def stop(self) -> None:
        """Stop every process (the Connect server first, the master last)."""
        for name, proc in reversed(self._procs):
            self._terminate(name, proc)
        self._procs = []
        self._connect = None

    # --- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], daemon: bool = True) -> subprocess.Popen[bytes]:
        """Start a process; a daemon (master, worker) gets the small daemon heap, a driver not
        (Spark's launcher would give the Connect server that heap too)."""
        home = spark_home()
        env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_LOG_DIR": str(self.root), "SPARK_WORKER_DIR": str(self.root)}
        if daemon:
            env["SPARK_DAEMON_MEMORY"] = DAEMON_MEMORY
        else:
            env.pop("SPARK_DAEMON_MEMORY", None)
        env.pop("PYSPARK_GATEWAY_PORT", None)
        env.pop("PYSPARK_GATEWAY_SECRET", None)
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([str(home / args[0]), *args[1:]], env=env, cwd=self.root,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._procs.append((name, proc))
        return proc

    def _terminate(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def _alive(self, name: str) -> None:
        for found, proc in self._procs:
            if found == name and proc.poll() is not None:
                log = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"spark {name} exited {proc.returncode}:\n{log}")

    def _wait_port(self, port: int, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._alive(name)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"spark {name} did not listen on {port}")
            time.sleep(0.2)

    def _wait_log(self, name: str, text: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        log = self.root / f"{name}.log"
        while text not in log.read_text(errors="replace"):
            self._alive(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"spark {name}: no {text!r} in its log")
            time.sleep(0.2)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="spark-"))
    with SparkCluster(root) as cluster:
        cluster.start_connect()
        conf = ",".join(f"{k}={v}" for k, v in application_conf().items())
        print(f"master:  {cluster.master_url}\nconnect: {cluster.connect_url}\n"
              f"logs:    {root}\n\n"
              f"STRATA_ENGINE=spark STRATA_SPARK_MASTER={cluster.master_url} \\\n"
              f"STRATA_SPARK_CONF={conf} strata executor\n\nCtrl-C stops the cluster.",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
