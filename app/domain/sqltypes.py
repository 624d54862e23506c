"""SQL type names as DuckDB spells them, so `int`, `INT4` and `INTEGER` are one type.

A layer's contract names its columns' types the way people write them (`TEXT`, `float8`, `bool`,
`decimal(12,2)`); comparing those with a written layer needs one spelling. DuckDB's own type
parser gives it (its aliases included), so the two sides never disagree about what `INT` means.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

_TYPE_TEXT = re.compile(r"^[A-Za-z][A-Za-z0-9_ ,()\[\]]*$")
MAX_TYPE_LENGTH = 200

_lock = threading.Lock()
_connection: Any = None


@lru_cache(maxsize=2048)
def canonical_type(name: str) -> str:
    """`name` as DuckDB names the type (`int` → `INTEGER`); ValueError when it is not a type."""
    text = " ".join(name.split())
    if not text or len(text) > MAX_TYPE_LENGTH or not _TYPE_TEXT.match(text):
        raise ValueError(f"{name!r} is not a SQL type name")
    import duckdb  # only where types are resolved: importing the domain stays cheap

    global _connection
    with _lock:  # one private connection, used by one thread at a time
        if _connection is None:
            _connection = duckdb.connect(":memory:")
        try:
            return str(_connection.type(text))
        except duckdb.Error:
            raise ValueError(f"{name!r} is not a type DuckDB knows") from None
