"""py-spy profiles of the service process, and a summary of where the samples fall.

    python -m bench.profiles data/bench/profiles/strata-10m.txt --top 30

`Profile(pid, out)` records the process (and its native frames: DuckDB's C++ shows up) with
`py-spy record --format raw` until `stop()`; py-spy comes from PATH or from the baseline venv
(`pip install py-spy` there), never from the project. `summarise()` reads the collapsed stacks
and reports, per thread group, the share of samples whose stack passes through each
`app/`/library function (inclusive) and the hottest leaf functions (self).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import ref_venv_dir

# a sample whose stack holds one of these is a thread waiting, not working (py-spy's own idle
# detection does not see through native frames)
IDLE = ("PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait",
        "epoll_wait", "epoll_pwait", "uv__io_poll", "Condition.wait (threading.py",
        "_queue_SimpleQueue_get", "sem_wait", "sem_timedwait", "select (selectors.py",
        "Event.wait (threading.py", "time_sleep")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = ref_venv_dir() / "bin" / "py-spy"
    return str(candidate) if candidate.exists() else None


class Profile:
    """`py-spy record` of one process until `stop()`."""

    def __init__(self, pid: int, out: Path, *, rate: int = 50, native: bool = True,
                 gil: bool = False) -> None:
        spy = py_spy()
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        if spy is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        args = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--threads",
                "--format", "raw", "--output", str(out)]
        if native:
            args.append("--native")
        if gil:  # only samples holding the GIL: Python's own CPU work
            args.append("--gil")
        with (out.parent / "py-spy.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.out if self.out.exists() else None


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()[:100]
    func, file = match.group("func"), match.group("file")
    repo = str(Path(__file__).resolve().parents[1]) + "/"
    for marker in ("/site-packages/", "/lib/python3.11/", repo):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file})" if file else func


def _group(thread: str) -> str:
    """py-spy's first frame names the thread: `thread (1234): MainThread`."""
    name = thread.partition(": ")[2] or thread
    if name.startswith("strata-stage"):
        return "executor stage threads (DuckDB)"
    if name == "MainThread":
        return "event loop (main thread)"
    if name.startswith("duckdb"):
        return "duckdb progress monitor"
    if name.startswith(("asyncio", "ThreadPoolExecutor")):
        return "default thread pool"
    return "other threads (" + re.sub(r"[-_]?\d+$", "", name) + ")"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Samples by thread group; inclusive and self shares of frames, per group and overall."""
    total = 0
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        if not frames or any(marker in frame for frame in frames[-12:] for marker in IDLE):
            continue
        total += count
        groups[_group(thread)] += count
        seen: set[str] = set()
        for frame in frames:
            name = _short(frame)
            if name not in seen:
                inclusive[name] += count
                seen.add(name)
        leaf[_short(frames[-1])] += count
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "threads": {g: share(n) for g, n in groups.most_common()},
        "inclusive": [(name, share(n)) for name, n in inclusive.most_common(top)],
        "self": [(name, share(n)) for name, n in leaf.most_common(top)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--grep", default="", help="only inclusive frames containing this")
    args = parser.parse_args()
    result = summarise(args.raw, top=2000 if args.grep else args.top)
    print(f"samples (busy): {result['samples']}")
    for group, share in result["threads"].items():
        print(f"  {share:6.1%}  {group}")
    print("inclusive:")
    shown = 0
    for name, share in result["inclusive"]:
        if args.grep and args.grep not in name:
            continue
        print(f"  {share:6.1%}  {name}")
        shown += 1
        if shown >= args.top:
            break
    print("self:")
    for name, share in result["self"][: args.top]:
        print(f"  {share:6.1%}  {name}")


if __name__ == "__main__":
    main()
