"""Named crash points for fault-injection tests (failpoints).

`STRATA_CRASH_AT=<point>[:<n>]` makes the process die with SIGKILL semantics (os._exit) the n-th
time (default the first) it reaches `crash_point(<point>)`. Unset — always, in production — a
crash point costs one dictionary lookup. Tests use this to kill the service exactly between two
steps that must be atomic or idempotent, e.g. after the executor created a task and before the
task id was saved.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("STRATA_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_remaining = {_POINT: int(_NTH or "1")} if _POINT else {}


def crash_point(name: str) -> None:
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os._exit(137)
