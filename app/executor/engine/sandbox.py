"""The SQL sandbox of the DuckDB engine: what user SQL may be, and the locked connection it runs on.

User SQL is a layer's `sql`, its check expressions and its dedupe `order_by`. Two independent
guards keep it to "read its own input layer, write nothing":

1. **Static checks, before anything runs** (`SqlGuard`). A layer's `sql` must parse to exactly one
   SELECT statement (`extract_statements`); a check expression must parse as exactly one expression
   and an `order_by` as exactly one ORDER BY list (each is placed into a fixed SELECT and the parse
   tree of that SELECT is checked to have exactly the expected shape, so text that "closes" the
   wrapper and smuggles a second clause or statement is refused). The parse tree (DuckDB's
   `json_serialize_sql`) is then walked: every table it names must be the input relation (`landing`,
   `ods`, `dwd` or `dws`) or one of its own CTEs, and the only table functions allowed are pure
   generators (`range`, `unnest`, ...). So `read_csv('/etc/passwd')`, `'/etc/passwd'` as a table
   name, `glob()`, `query_table()`, another job's Parquet and catalog tables are refused with a
   message naming what was refused, before any file is created.

2. **A locked connection** (`open_connection` + `lock_connection`). The connection is set up with
   `enable_external_access=false`, `allowed_paths` = exactly the input files (the landing files of
   the source, or the Parquet files of the previous layer of the same job) and
   `allowed_directories` = only this stage's temporary output folder; extension autoloading and
   Python replacement scans are off; then `lock_configuration=true`, so no SET/RESET/PRAGMA can
   undo any of it. Whatever the static checks might miss, DuckDB itself refuses the file access
   (`PermissionException`, translated to `SandboxViolation` by `translate_error`).

A run parameter is read as `$name` and bound as a typed value when the statement runs; the guard
accepts only the names the run binds (`UnknownParameter` names the layer and the parameter). A
value never becomes SQL text, so no value can change a statement's shape or widen the sandbox.

Everything the engine itself splices into SQL is either a fixed identifier, a properly quoted
string literal (`sql_string`) or user text that passed the checks above; the composed statements
are parsed again (`ensure_single`) before they run.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from app.domain.params import IDENTIFIER
from app.executor.engine.base import SandboxViolation, StageFailed, UnknownParameter

# Table functions user SQL may call: pure generators that read no file and no catalog.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree"}
)
# Names of table functions that read files: a refusal names the file they were asked for.
_FILE_FUNCTION = re.compile(
    r"^(read_\w+|\w+_scan|parquet_\w+|glob|sniff_csv|iceberg_\w+|delta_\w+)$"
)
# Scalar functions that would show the engine's settings (paths) or session state.
REFUSED_FUNCTIONS = frozenset({"current_setting", "getvariable", "getenv"})
_KEYWORD = re.compile(r"^\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*([A-Za-z]+)", re.DOTALL)
_FILE_LIKE = re.compile(r"[/\\.:~]")
_PERMISSION = re.compile(r'Cannot access (?:file|directory) "([^"]*)"')
WRAPPED_INPUT = "__strata_input"


class SqlError(StageFailed):
    """User SQL does not parse or has the wrong shape (not a sandbox matter)."""


@dataclass(frozen=True)
class CheckedSelect:
    """A user SELECT that passed the sandbox checks."""

    text: str
    """The statement text, without a trailing `;`; splice it on lines of its own."""
    ordered: bool
    """The statement ends with a top-level ORDER BY (its row order is part of its result)."""


def sql_string(value: str) -> str:
    """A SQL string literal for `value` (single quotes doubled; NUL bytes refused)."""
    if "\x00" in value:
        raise StageFailed("a value passed to SQL holds a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier for a validated name (a column, view or table of ours or a key)."""
    if not IDENTIFIER.match(name):
        raise SandboxViolation(f"{name!r} is not a valid column name")
    return '"' + name + '"'


def sql_value(value: Any) -> str:
    """A typed SQL literal for a reader option value (bool, int or str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return sql_string(value)
    raise StageFailed(f"unsupported option value {value!r}")


_local = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """This thread's parse-only connection (it holds no data, opens no file, runs no user SQL)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        _local.con = con
    return con


# A job's SQL is checked again for every stage and every run: the parser's answers are kept per
# distinct text (they depend on nothing else), which takes a DWD stage's checks from ~3.5 ms to
# microseconds. The cached trees are only read, never changed.
@functools.lru_cache(maxsize=1024)
def _statement_kinds(sql: str) -> tuple[tuple[str, ...], str | None]:
    """The kinds of the statements in `sql`, or the parser's error."""
    try:
        return tuple(_statement_name(s) for s in _parser().extract_statements(sql)), None
    except duckdb.Error as exc:
        return (), _first_line(exc)


@functools.lru_cache(maxsize=1024)
def _serialized(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of `sql` (`json_serialize_sql`), as a dict."""
    row = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    return tree


def _statement_name(statement: Any) -> str:
    """What a statement is, by its first keyword (INSTALL, PRAGMA) or else its type (COPY)."""
    kind = statement.type
    name = str(getattr(kind, "name", kind))
    match = _KEYWORD.match(str(getattr(statement, "query", "")))
    keyword = match.group(1).upper() if match else ""
    if name == "SELECT" or not keyword or keyword in ("WITH", "FROM"):
        return name
    return keyword


class SqlGuard:
    """Static checks of one layer's user SQL; messages name the layer and what was refused.

    `parameters` are the names the run binds: user SQL may read them as `$name` (a typed value,
    never text), any other parameter reference is refused. The guard holds no resource of its own
    (it parses on this thread's shared parse-only connection), so it needs no closing.
    """

    def __init__(self, layer: str, input_name: str, parameters: Collection[str] = ()) -> None:
        self.layer = layer
        self.input_name = input_name
        self.parameters = frozenset(parameters)

    # -- public checks ---------------------------------------------------------------------

    def select(self, sql: str, what: str = "sql") -> CheckedSelect:
        """A layer's `sql`: exactly one SELECT that reads only the input relation."""
        label = f"layer {self.layer} {what}"
        statements = self._parse(sql, label)
        if len(statements) != 1:
            kinds = ", ".join(statements) or "nothing"
            raise SandboxViolation(
                f"{label}: only one SELECT statement is allowed, got "
                + (f"{len(statements)} statements ({kinds})" if statements else kinds)
            )
        kind = statements[0]
        if kind != "SELECT":
            raise SandboxViolation(f"{label}: only one SELECT statement is allowed, got {kind}")
        text = _strip_terminator(sql)
        tree = self._tree(text, label)
        node = tree["node"]
        self._check_sources(tree, label)
        ordered = any(m.get("type") == "ORDER_MODIFIER" for m in node.get("modifiers", []))
        return CheckedSelect(text=text, ordered=ordered)

    def expression(self, expr: str, what: str) -> str:
        """A check expression: exactly one SQL expression over the layer's columns."""
        label = f"layer {self.layer} {what}"
        try:
            duckdb.SQLExpression(expr)
        except duckdb.Error as exc:
            if ";" in expr or "statement" in str(exc):
                raise SandboxViolation(
                    f"{label}: must be a single SQL expression; statements are refused "
                    f"({_first_line(exc)})"
                ) from None
            raise SqlError(f"{label}: {_first_line(exc)}") from None
        tree = self._tree(
            f"SELECT (\n{expr}\n) FROM {WRAPPED_INPUT}", label, "a single SQL expression"
        )
        node = tree["node"]
        if not (
            node.get("type") == "SELECT_NODE"
            and len(node.get("select_list", [])) == 1
            and _is_wrapped_input(node.get("from_table"))
            and _bare(node)
        ):
            raise SandboxViolation(f"{label}: must be a single SQL expression")
        self._check_sources(tree, label)
        return f"(\n{expr}\n)"

    def order_by(self, order_by: str, what: str = "dedupe order_by") -> str:
        """A dedupe `order_by`: exactly one ORDER BY list (`a DESC NULLS LAST, b`)."""
        label = f"layer {self.layer} {what}"
        try:
            tree = self._tree(
                f"SELECT row_number() OVER (PARTITION BY 1 ORDER BY\n{order_by}\n) "
                f"FROM {WRAPPED_INPUT}",
                label,
                "an ORDER BY list",
            )
        except SqlError:
            if ";" in order_by:
                raise SandboxViolation(
                    f"{label}: must be an ORDER BY list; statements are refused"
                ) from None
            raise
        node = tree["node"]
        items = node.get("select_list", [])
        if not (
            node.get("type") == "SELECT_NODE"
            and len(items) == 1
            and items[0].get("type") == "WINDOW_ROW_NUMBER"
            and len(items[0].get("partitions", [])) == 1
            and items[0].get("orders")
            and _is_wrapped_input(node.get("from_table"))
            and _bare(node)
        ):
            raise SandboxViolation(f"{label}: must be an ORDER BY list such as 'ts DESC, id'")
        self._check_sources(tree, label)
        return order_by

    def key(self, name: str) -> str:
        """A dedupe key column, quoted."""
        if not IDENTIFIER.match(name):
            raise SandboxViolation(f"layer {self.layer} dedupe key {name!r} is not a column name")
        return sql_identifier(name)

    # -- helpers ---------------------------------------------------------------------------

    def _parse(self, sql: str, label: str) -> tuple[str, ...]:
        """The kinds of the statements in `sql` (`_statement_name`)."""
        kinds, error = _statement_kinds(sql)
        if error is not None:
            raise SqlError(f"{label}: {error}")
        return kinds

    def _tree(self, sql: str, label: str, shape: str = "one SELECT") -> dict[str, Any]:
        """The parse tree of one SELECT; anything else is refused."""
        statements = self._parse(sql, label)
        if len(statements) != 1 or statements[0] != "SELECT":
            kinds = ", ".join(statements) or "nothing"
            raise SandboxViolation(
                f"{label}: must be {shape}; statements are refused (got {kinds})"
            )
        tree = _serialized(sql)
        statements_json: list[dict[str, Any]] = tree.get("statements") or []
        if tree.get("error") or len(statements_json) != 1:
            message = tree.get("error_message", "cannot be analysed")
            raise SandboxViolation(f"{label}: refused, the sandbox cannot check it ({message})")
        return statements_json[0]

    def _check_sources(self, tree: dict[str, Any], label: str) -> None:
        ctes = {name.lower() for name in _cte_names(tree)}
        allowed = ctes | {self.input_name.lower(), WRAPPED_INPUT}
        prefix = f"{label} may read only its input {self._what_input()} '{self.input_name}'"
        for ref in _table_refs(tree):
            kind = ref.get("type")
            if kind == "BASE_TABLE":
                name = str(ref.get("table_name", ""))
                catalog = str(ref.get("catalog_name", "")).lower()
                schema = str(ref.get("schema_name", "")).lower()
                ok = (
                    name.lower() in allowed
                    and catalog in ("", "memory", "temp")
                    and schema in ("", "main")
                )
                if not ok:
                    noun = "file" if _FILE_LIKE.search(name) else "table"
                    full = ".".join(p for p in (catalog, schema, name) if p)
                    raise SandboxViolation(f"{prefix}: access to {noun} '{full}' refused")
            elif kind == "TABLE_FUNCTION":
                function = ref.get("function") or {}
                fname = str(function.get("function_name", "")).lower()
                if fname in ALLOWED_TABLE_FUNCTIONS and not function.get("schema"):
                    continue
                target = _first_string_argument(function)
                if _FILE_FUNCTION.match(fname) and target is not None:
                    raise SandboxViolation(f"{prefix}: access to file '{target}' refused ({fname})")
                raise SandboxViolation(f"{prefix}: table function '{fname}' refused")
            else:  # SHOW_REF: DESCRIBE / SUMMARIZE / SHOW of anything
                raise SandboxViolation(f"{prefix}: DESCRIBE/SUMMARIZE/SHOW refused")
        for node in _walk(tree):
            if node.get("class") == "FUNCTION" and (
                str(node.get("function_name", "")).lower() in REFUSED_FUNCTIONS
            ):
                raise SandboxViolation(f"{label}: function '{node['function_name']}' refused")
            if node.get("class") == "PARAMETER":
                name = str(node.get("identifier", ""))
                if name not in self.parameters:
                    raise UnknownParameter(label, name, self.parameters)

    def _what_input(self) -> str:
        return "relation" if self.input_name == "landing" else "layer"


def ensure_single(con: duckdb.DuckDBPyConnection, sql: str, kind: str) -> str:
    """Re-parse a statement the engine composed: it must be exactly one `kind` statement."""
    _single(con, sql, kind)
    return sql


def bind(
    con: duckdb.DuckDBPyConnection, sql: str, kind: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """`ensure_single`, and the values of the parameters the statement reads (DuckDB refuses
    values a statement does not read). Every `$name` was checked by `SqlGuard` against `values`."""
    statement = _single(con, sql, kind)
    names = statement.named_parameters
    missing = sorted(names - values.keys())
    if missing:  # pragma: no cover - SqlGuard refuses unknown parameters first
        raise UnknownParameter(f"{kind} statement", missing[0], values.keys())
    return {name: values[name] for name in names}


def _single(con: duckdb.DuckDBPyConnection, sql: str, kind: str) -> Any:
    statements = con.extract_statements(sql)
    if len(statements) != 1 or _statement_name(statements[0]) != kind:
        raise SandboxViolation(f"composed statement is not a single {kind}; refused")
    return statements[0]


# -- the locked connection ------------------------------------------------------------------


def open_connection(
    *,
    threads: int,
    memory_limit: str | None,
    temp_directory: Path | None,
    preserve_insertion_order: bool,
    allowed_paths: Iterable[Path],
    allowed_directories: Iterable[Path],
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that can reach only the given files and folders.

    The configuration is not locked yet: the engine creates its input views first (they bind
    against the allowed files), then calls `lock_connection` before any user SQL runs. Without a
    `temp_directory` nothing spills: past `memory_limit` a query fails.
    """
    # replacement scans off in the database's own config too, so every connection of it (a
    # shared database's cursors) starts with them off, not only this one
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        settings = [
            f"SET threads = {max(1, int(threads))}",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET python_enable_replacements = false",
            "SET enable_progress_bar = true",
            "SET enable_progress_bar_print = false",
            f"SET preserve_insertion_order = {'true' if preserve_insertion_order else 'false'}",
            f"SET temp_directory = {sql_string(str(temp_directory or ''))}",
            f"SET allowed_paths = [{', '.join(sql_string(str(p)) for p in allowed_paths)}]",
            "SET allowed_directories = ["
            + ", ".join(sql_string(str(d).rstrip("/") + "/") for d in allowed_directories)
            + "]",
            "SET enable_external_access = false",
        ]
        if memory_limit:
            settings.insert(1, f"SET memory_limit = {sql_string(memory_limit)}")
        for statement in settings:
            con.execute(statement)
    except duckdb.Error as exc:
        con.close()
        raise StageFailed(f"cannot configure the engine: {_first_line(exc)}") from None
    return con


def lock_connection(con: duckdb.DuckDBPyConnection) -> None:
    """After this no statement can change a setting (SET, RESET, PRAGMA are refused)."""
    con.execute("SET lock_configuration = true")


def translate_error(
    exc: BaseException, *, label: str, input_name: str, replacements: Sequence[tuple[str, str]]
) -> StageFailed:
    """A DuckDB error as the StageFailed (or SandboxViolation) shown to the user."""
    message = sanitize(str(exc).strip(), replacements)
    if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in message:
        what = "relation" if input_name == "landing" else "layer"
        match = _PERMISSION.search(message)
        target = f"access to file '{match.group(1)}' refused" if match else _first_line(message)
        return SandboxViolation(f"{label} may read only its input {what} '{input_name}': {target}")
    if "extension" in message and ("INSTALL" in message or "LOAD" in message):
        return SandboxViolation(f"{label}: extensions cannot be installed or loaded ({message})")
    return StageFailed(f"{label}: {message}")


def sanitize(message: str, replacements: Sequence[tuple[str, str]]) -> str:
    """Replace the service's absolute directories in a message by their relative names."""
    for absolute, relative in sorted(replacements, key=lambda pair: -len(pair[0])):
        message = message.replace(absolute, relative)
    return message


# -- parse-tree helpers ---------------------------------------------------------------------


def _strip_terminator(sql: str) -> str:
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bare(node: dict[str, Any]) -> bool:
    """No WHERE, GROUP BY, HAVING, QUALIFY, modifiers or CTEs: only the select list and FROM."""
    return (
        node.get("where_clause") is None
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and not node.get("modifiers")
        and not (node.get("cte_map") or {}).get("map")
        and node.get("sample") is None
    )


def _is_wrapped_input(ref: Any) -> bool:
    return (
        isinstance(ref, dict)
        and ref.get("type") == "BASE_TABLE"
        and ref.get("table_name") == WRAPPED_INPUT
        and not ref.get("schema_name")
        and not ref.get("catalog_name")
    )


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child)


def _cte_names(tree: dict[str, Any]) -> Iterator[str]:
    for node in _walk(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    yield entry["key"]


def _table_refs(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for node in _walk(tree):
        if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION", "SHOW_REF") and (
            "table_name" in node or "function" in node or node.get("type") == "SHOW_REF"
        ):
            yield node


def _first_string_argument(function: dict[str, Any]) -> str | None:
    """The first string constant among a call's arguments (looking into lists), if any."""
    arguments = function.get("arguments") or function.get("children") or []
    for argument in arguments:
        expression = argument.get("expression", argument) if isinstance(argument, dict) else None
        if not isinstance(expression, dict):
            continue
        literal = expression.get("literal")
        if isinstance(literal, dict) and isinstance(literal.get("text"), str):
            return str(literal["text"])
        if expression.get("class") == "FUNCTION":  # e.g. a list of paths: list_value('a', 'b')
            inner = _first_string_argument(expression)
            if inner is not None:
                return inner
        return None
    return None
