"""Conditions: the Kubernetes-style 'why is this job where it is' list on every job.

One entry per type; `last_transition_time` changes only when the status changes, so a condition
that keeps saying the same thing does not look like news.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Types beyond the stage names
EXECUTOR_REACHABLE = "ExecutorReachable"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"
SUSPENDED = "Suspended"


# One condition as a job document shows it (no docstring: it would enter the OpenAPI schema).
class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: datetime


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new list with the condition of `type_` set (the input is never mutated)."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != status
        out.append({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "last_transition_time": now.isoformat() if changed else cond.get(
                "last_transition_time", now.isoformat()),
        })
    if not found:
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "last_transition_time": now.isoformat()})
    return out


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
