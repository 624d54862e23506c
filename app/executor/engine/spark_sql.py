"""User SQL for the Spark engine: the DuckDB sandbox rule, then DuckDB → Spark SQL with sqlglot.

A job's layer SQL, check expressions and dedupe `order_by` are written in the DuckDB dialect
(DESIGN.md). Before any of it reaches Spark it is parsed with sqlglot and held to the same rule the
DuckDB engine enforces: exactly one SELECT, reading only the stage's input layer (and its own
CTEs), writing nothing. Only then is the syntax tree rewritten for Spark and printed in its dialect.

The parsed tree, not the user's text, is what Spark sees: input-layer references are pointed at the
stage's private temp view, comments are dropped, and nothing is spliced in as a string. A construct
sqlglot cannot express in Spark SQL fails the stage with `StageFailed` naming the layer.

Known dialect differences that the transpiler does not close are listed in docs/spark.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from app.executor.engine.base import SandboxViolation, StageFailed, UnknownParameter

READ = "duckdb"
WRITE = "spark"

# Statements (or parts of one) that change state, reach outside the query, or are not a query.
_FORBIDDEN_NODE_NAMES = (
    "Alter",
    "Analyze",
    "Attach",
    "Cache",
    "Command",
    "Comment",
    "Commit",
    "Copy",
    "Create",
    "Declare",
    "Delete",
    "Describe",
    "Detach",
    "Drop",
    "Export",
    "Grant",
    "Insert",
    "Install",
    "Into",
    "Kill",
    "LoadData",
    "Lock",
    "Merge",
    "Pragma",
    "Refresh",
    "Revoke",
    "Rollback",
    "Set",
    "Show",
    "Summarize",
    "Transaction",
    "TruncateTable",
    "Uncache",
    "Update",
    "Use",
)
_FORBIDDEN_NODES: tuple[type[exp.Expr], ...] = tuple(
    cls for name in _FORBIDDEN_NODE_NAMES if isinstance(cls := getattr(exp, name, None), type)
)
_QUERY_TYPES: tuple[type[exp.Expr], ...] = (exp.Select, exp.SetOperation, exp.Values)

# Functions that read files, settings or the environment in DuckDB, or that reach the JVM, the
# file system or the caller's identity in Spark. Refused by name, whatever their arguments.
_DENIED_FUNCTIONS = frozenset(
    {
        "reflect",
        "java_method",
        "try_reflect",
        "input_file_name",
        "input_file_block_start",
        "input_file_block_length",
        "current_user",
        "session_user",
        "user",
        "getenv",
        "current_setting",
        "glob",
        "sniff_csv",
        "query",
        "query_table",
        "identifier",
        "read_files",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "duckdb_settings",
        "duckdb_secrets",
        "which_secret",
        "load_extension",
        "secret",
        "currentuser",
        "sessionuser",
    }
)
_GENERATORS = frozenset({"range", "generate_series", "unnest"})
_FILE_LIKE = re.compile(r"[/\\.:~]")
_DENIED_PREFIXES = ("read_", "readcsv", "readparquet", "readjson", "duckdb_", "pragma_")


@dataclass(frozen=True)
class UserSql:
    """One stage's user SQL rules: read only `input_layer` (and own CTEs), bind only `parameters`.

    `relation` is the name of the temp view that holds the input layer for this stage only.
    `parameters` are the names the run binds: `$name` becomes Spark's named marker `:name`
    (bound by `spark.sql(text, args=...)`); any other parameter reference is refused.
    """

    layer: str
    input_layer: str
    relation: str
    parameters: frozenset[str] = frozenset()

    def query(self, sql: str) -> str:
        """Check one DuckDB SELECT over the input layer; return it as Spark SQL."""
        label = f"layer {self.layer} sql"
        statement = _parse_single(sql, label=label)
        if isinstance(statement, exp.Subquery) and isinstance(statement.this, _QUERY_TYPES):
            statement = statement.unnest()
        if not isinstance(statement, _QUERY_TYPES):
            raise SandboxViolation(
                f"{label}: only one SELECT statement is allowed, got {_describe(statement)}"
            )
        return self._to_spark(statement, label)

    def predicate(self, expr: str, name: str) -> str:
        """A check's boolean expression (subqueries may read only the input layer)."""
        label = f"layer {self.layer} check {name!r}"
        select = _wrapped(
            f"SELECT (\n{expr}\n) FROM __strata_row",
            label=label,
            fragment=expr,
            shape="a single SQL expression",
        )
        if len(select.expressions) != 1 or isinstance(select.expressions[0].unnest(), exp.Alias):
            raise SandboxViolation(f"{label}: must be a single SQL expression")
        return self._to_spark(select.expressions[0], label)

    def order_by(self, order_by: str) -> str:
        """A dedupe `order_by` list, with DuckDB's NULL ordering made explicit."""
        label = f"layer {self.layer} dedupe order_by"
        select = _wrapped(
            f"SELECT 1 FROM __strata_row ORDER BY\n{order_by}\n",
            label=label,
            fragment=order_by,
            shape="an ORDER BY list such as 'ts DESC, id'",
        )
        order = select.args.get("order")
        if order is None or select.args.get("limit") or select.args.get("offset"):
            raise SandboxViolation(f"{label}: must be an ORDER BY list such as 'ts DESC, id'")
        spark = self._to_spark(order, label)
        prefix = "ORDER BY "
        if not spark.startswith(prefix):  # pragma: no cover - sqlglot always prints the keyword
            raise StageFailed(f"{label}: cannot be transpiled to Spark SQL")
        return spark[len(prefix) :]

    def _to_spark(self, tree: exp.Expr, label: str) -> str:
        _check_tree(tree, label=label, parameters=self.parameters)
        _point_at_relation(
            tree, label=label, input_layer=self.input_layer, relation=self.relation
        )
        return _to_spark(_spark_semantics(tree, label=label), label=label)


def ends_with_order_by(spark_sql: str) -> bool:
    """The (transpiled) query's result order is part of it: a top-level ORDER BY, no LIMIT."""
    tree = sqlglot.parse_one(spark_sql, read=WRITE)
    return tree.args.get("order") is not None and tree.args.get("limit") is None


def _parse_single(sql: str, *, label: str) -> exp.Expr:
    try:
        statements = [s for s in sqlglot.parse(sql, read=READ) if s is not None]
    except SqlglotError as err:
        raise StageFailed(
            f"{label}: cannot be parsed for transpiling to Spark SQL (DuckDB dialect "
            f"expected): {_first_line(err)}"
        ) from None
    if len(statements) != 1:
        kinds = ", ".join(_describe(s) for s in statements) or "nothing"
        raise SandboxViolation(
            f"{label}: only one SELECT statement is allowed, got {len(statements)} "
            f"statements ({kinds})"
        )
    return statements[0]


def _wrapped(sql: str, *, label: str, fragment: str, shape: str) -> exp.Select:
    """Parse a fragment inside a fixed SELECT, and make sure the wrapper kept its shape."""
    try:
        statement = _parse_single(sql, label=label)
    except StageFailed:
        if ";" in fragment:
            raise SandboxViolation(f"{label}: must be {shape}; statements are refused") from None
        raise
    if (
        not isinstance(statement, exp.Select)
        or statement.args.get("with_")
        or statement.args.get("with")
        or statement.args.get("joins")
        or statement.args.get("where")
        or statement.args.get("group")
        or statement.args.get("having")
        or statement.args.get("qualify")
    ):
        raise SandboxViolation(f"{label}: must be {shape}")
    source = statement.args.get("from_") or statement.args.get("from")
    table = source.this if source is not None else None
    if (
        source is None
        or not isinstance(table, exp.Table)
        or table.name != "__strata_row"
        or table.alias
    ):
        raise SandboxViolation(f"{label}: must be {shape}")
    source.pop()
    return statement


def _check_tree(tree: exp.Expr, *, label: str, parameters: Collection[str]) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Placeholder) and node.name:
            # sqlglot reads DuckDB's `$name` as a named placeholder and prints it as `:name`
            if node.name not in parameters:
                raise UnknownParameter(label, node.name, parameters)
            continue
        if isinstance(node, _FORBIDDEN_NODES):
            raise SandboxViolation(f"{label}: {_describe(node)} is refused")
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
                raise SandboxViolation(f"{label}: function {name}() is refused")
        construct = _duckdb_only(node)
        if construct:
            raise StageFailed(
                f"{label}: {construct} is DuckDB-only and cannot be transpiled to Spark SQL"
            )


def _duckdb_only(node: exp.Expr) -> str | None:
    """DuckDB constructs that sqlglot would print unchanged into SQL that Spark cannot run."""
    if isinstance(node, exp.Join):
        method = str(node.args.get("method") or node.args.get("kind") or "").upper()
        if method in {"ASOF", "POSITIONAL"}:
            return f"{method} JOIN"
    if isinstance(node, exp.Star) and (node.args.get("replace") or node.args.get("rename")):
        return "SELECT * REPLACE/RENAME"
    if (isinstance(node, exp.Anonymous) and str(node.name).lower() == "columns") or (
        type(node).__name__ == "Columns"
    ):
        return "COLUMNS(...)"
    if isinstance(node, exp.Parameter | exp.Placeholder):
        return "a query parameter"
    if isinstance(node, exp.Limit):
        options = node.args.get("limit_options")
        if node.args.get("percent") or (options is not None and options.args.get("percent")):
            return "LIMIT … PERCENT"
    return None


def _point_at_relation(tree: exp.Expr, *, label: str, input_layer: str, relation: str) -> None:
    """Refuse every table but the input layer and the query's own CTEs; aim the input at `relation`.

    sqlglot's scope analysis says which table names are CTE references and which are real
    relations; every `exp.Table` in the tree must be accounted for by it, or it is refused.
    """
    real: list[exp.Table] = []
    accounted: set[int] = set()
    for scope in _scopes(tree, label=label):
        for node, source in scope.selected_sources.values():
            if not isinstance(node, exp.Table):
                continue
            accounted.add(id(node))
            if not isinstance(source, Scope):
                real.append(node)
    for table in tree.find_all(exp.Table):
        if id(table) not in accounted:
            raise SandboxViolation(
                f"{label} may read only its input {_noun(input_layer)} '{input_layer}': "
                f"table reference {table.sql(dialect=READ)} refused"
            )
    for table in real:
        if _is_generator(table):
            continue
        if not _is_input(table, input_layer):
            raise SandboxViolation(
                f"{label} may read only its input {_noun(input_layer)} '{input_layer}': "
                f"access to {_what(table)} refused"
            )
        # keep the name the query uses as its alias, so `ods.col` and `o.*` still resolve;
        # set in place, so PIVOT, samples and hints hanging off the table stay where they are
        if not table.args.get("alias"):
            table.set("alias", exp.TableAlias(this=table.this.copy()))
        table.set("this", exp.to_identifier(relation))


def _scopes(tree: exp.Expr, *, label: str) -> Iterable[Scope]:
    if not isinstance(tree, _QUERY_TYPES):
        # an expression (check, order_by): analyse each subquery in it as its own query
        queries = [
            node
            for node in tree.walk(prune=lambda n: isinstance(n, _QUERY_TYPES))
            if isinstance(node, _QUERY_TYPES)
        ]
        return [scope for query in queries for scope in _scopes(query, label=label)]
    try:
        return list(traverse_scope(tree))
    except SqlglotError as err:
        raise SandboxViolation(
            f"{label}: refused, the sandbox cannot check it ({_first_line(err)})"
        ) from None


def _is_input(table: exp.Table, input_layer: str) -> bool:
    return (
        isinstance(table.this, exp.Identifier)
        and not table.args.get("db")
        and not table.args.get("catalog")
        and table.name.lower() == input_layer.lower()
    )


def _spark_semantics(tree: exp.Expr, *, label: str) -> exp.Expr:
    """Rewrite what sqlglot prints for Spark with another meaning than DuckDB's.

    Each rule was found by running the same expression on both engines (docs/spark.md).
    """

    def fix(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.DayOfWeek):  # DuckDB: Sunday = 0; Spark dayofweek: Sunday = 1
            return exp.paren(exp.Sub(this=node.copy(), expression=exp.Literal.number(1)))
        if isinstance(node, exp.DayOfWeekIso):  # Monday = 1 … Sunday = 7 on both
            return exp.paren(
                exp.Add(
                    this=exp.func("weekday", node.this.copy()), expression=exp.Literal.number(1)
                )
            )
        if isinstance(node, exp.Extract) and node.name.lower() in {"dow", "dayofweek"}:
            return exp.paren(exp.Sub(this=node.copy(), expression=exp.Literal.number(1)))
        if isinstance(node, exp.Extract) and node.name.lower() == "isodow":
            return exp.paren(
                exp.Add(
                    this=exp.func("weekday", node.expression.copy()),
                    expression=exp.Literal.number(1),
                )
            )
        if isinstance(node, exp.WithinGroup):
            return _within_group(node, label=label)
        if isinstance(node, exp.PercentileCont) and not isinstance(node.parent, exp.WithinGroup):
            # quantile_cont(x, q): exact, interpolated; sqlglot's PERCENTILE_CONT(x, q) is no
            # Spark function (and its WITHIN GROUP form turns into PERCENTILE_APPROX)
            return exp.func("percentile", node.this.copy(), node.expression.copy())
        if isinstance(node, exp.ArrayAgg) and node.find(exp.Order):
            raise StageFailed(
                f"{label}: list()/array_agg() with ORDER BY cannot be transpiled "
                "to Spark SQL (Spark's collect_list has no order)"
            )
        if isinstance(node, exp.Anonymous) and str(node.name).lower() == "strlen":
            return exp.func("length", *[e.copy() for e in node.expressions])
        return node

    return tree.transform(fix, copy=False)


def _within_group(node: exp.WithinGroup, *, label: str) -> exp.Expr:
    """`percentile_cont(q) WITHIN GROUP (ORDER BY x)` → `percentile(x, q)`; others refused."""
    inner, order = node.this, node.expression
    keys = order.expressions if isinstance(order, exp.Order) else []
    if isinstance(inner, exp.PercentileCont) and len(keys) == 1:
        key = keys[0]
        fraction = inner.this.copy()
        if key.args.get("desc"):
            fraction = exp.Sub(this=exp.Literal.number(1), expression=fraction)
        return exp.func("percentile", key.this.copy(), fraction)
    raise StageFailed(
        f"{label}: {type(inner).__name__.upper()}(…) WITHIN GROUP cannot be "
        "transpiled to Spark SQL; only percentile_cont can"
    )


def _to_spark(tree: exp.Expr, *, label: str) -> str:
    try:
        return tree.sql(dialect=WRITE, unsupported_level=ErrorLevel.RAISE, comments=False)
    except SqlglotError as err:
        raise StageFailed(
            f"{label}: cannot be transpiled from DuckDB to Spark SQL: {_first_line(err)}"
        ) from None


def _is_generator(table: exp.Table) -> bool:
    """`range(…)`, `generate_series(…)`, `unnest(…)`: table functions that read nothing."""
    this = table.this
    if isinstance(this, exp.GenerateSeries | exp.Unnest | exp.Explode):
        return True
    return isinstance(this, exp.Anonymous) and str(this.name).lower() in _GENERATORS


def _noun(input_layer: str) -> str:
    return "relation" if input_layer == "landing" else "layer"


def _what(table: exp.Table) -> str:
    if not isinstance(table.this, exp.Identifier):
        return f"table function {table.this.sql(dialect=READ)}"
    name = ".".join(part.name for part in table.parts)
    noun = "file" if _FILE_LIKE.search(name) else "table"
    return f"{noun} '{name}'"


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return type(node).__name__.lower()


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return type(node).__name__.upper()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
