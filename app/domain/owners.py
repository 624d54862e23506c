"""Owners and where their landed files live.

With tokens configured, each owner has a landing space of its own (`<landing>/<owner>/`), so one
owner's jobs can never read another owner's raw files. Without tokens there is one local owner,
whose space is the landing directory itself.
"""

from __future__ import annotations

import re

LOCAL_OWNER = "local"
OWNER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
_OWNER = re.compile(OWNER_PATTERN)


def valid_owner(name: str) -> bool:
    return bool(_OWNER.fullmatch(name)) and name != LOCAL_OWNER


def landing_scope(owner: str) -> str | None:
    """The owner's folder under the landing directory, or None for the local owner (the root)."""
    return None if owner == LOCAL_OWNER else owner
