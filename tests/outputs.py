"""Comparing served outputs the way the reference does: same rows, same keys, every non-float
value equal, floats within a relative tolerance (parallel sums add in different orders)."""

from __future__ import annotations

import math
from typing import Any

REL_TOL = 1e-9


def same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return not differences(got, expected)


def differences(got: list[dict[str, Any]], expected: list[dict[str, Any]],
                rel_tol: float = REL_TOL) -> list[str]:
    if len(got) != len(expected):
        return [f"{len(got)} rows, expected {len(expected)}"]
    found = []
    for i, (row, want) in enumerate(zip(got, expected, strict=True)):
        if row.keys() != want.keys():
            found.append(f"row {i}: columns {sorted(row)} != {sorted(want)}")
            continue
        for key, value in row.items():
            other = want[key]
            if isinstance(value, float) and isinstance(other, float):
                if not math.isclose(value, other, rel_tol=rel_tol, abs_tol=1e-12):
                    found.append(f"row {i} {key}: {value} != {other}")
            elif value != other:
                found.append(f"row {i} {key}: {value!r} != {other!r}")
    return found
