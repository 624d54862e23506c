"""Data-quality gates: what a layer's params demand of the output an engine has just written.

Judged after the engine published the layer, from what every engine leaves behind — the counts
of its `LayerResult` and the schema in the written Parquet footers — so the DuckDB and the Spark
engine are held to the same gates by the same code.

* `reject_limit`: rejects ÷ (rows + rejects) above it → failure `TooManyRejects`.
* `contract`: the output's columns and types against the declared ones (names compared as DuckDB
  compares identifiers, case-insensitively; types in DuckDB's spelling; order ignored). Added,
  missing or retyped columns are drift: `on_drift: fail` → failure `SchemaDrift`,
  `warn` → a warning with the same reason and message.

A gate's failure is deterministic: running the stage again reads the same input and writes the
same output, so the task that carries it says it is not worth retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.domain.params import Contract, Layer
from app.domain.sqltypes import canonical_type
from app.executor.engine.base import LayerResult
from app.store.layers import layer_schema

TOO_MANY_REJECTS = "TooManyRejects"
SCHEMA_DRIFT = "SchemaDrift"


@dataclass(frozen=True)
class Finding:
    """One gate's complaint: a machine-readable reason and a message for people."""

    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Verdict:
    """What the gates say about one written layer."""

    failures: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def reason(self) -> str | None:
        """The first failure's reason (the one the job's Failed condition gets)."""
        return self.failures[0].reason if self.failures else None

    @property
    def message(self) -> str:
        return "; ".join(f.message for f in self.failures)

    def result_fields(self) -> dict[str, Any]:
        """What the verdict adds to the task's result document."""
        fields: dict[str, Any] = {}
        if self.failures:
            fields.update(reason=self.reason, retryable=False)
        if self.warnings:
            fields["warnings"] = [w.to_dict() for w in self.warnings]
        return fields


@dataclass(frozen=True)
class Drift:
    """How an output's columns differ from a contract's."""

    added: list[tuple[str, str]] = field(default_factory=list)
    """(name, type) in the output, not in the contract."""
    missing: list[tuple[str, str]] = field(default_factory=list)
    """(name, type) in the contract, not in the output."""
    retyped: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, expected type, actual type)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.missing or self.retyped)

    def describe(self, layer: str) -> str:
        parts = []
        if self.added:
            parts.append("added " + ", ".join(f"{n} ({t})" for n, t in self.added))
        if self.missing:
            parts.append("missing " + ", ".join(f"{n} ({t})" for n, t in self.missing))
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{n} ({want} → {got})"
                                                 for n, want, got in self.retyped))
        return f"{layer}: the output does not match its contract: " + "; ".join(parts)


def evaluate(spec: Layer, result: LayerResult, output: Path) -> Verdict:
    """Judge the layer written to `output` by the gates of its `spec`."""
    failures: list[Finding] = []
    warnings: list[Finding] = []
    rejected = too_many_rejects(result, spec.reject_limit)
    if rejected is not None:
        failures.append(rejected)
    if spec.contract is not None:
        drift = schema_drift(spec.contract, output_columns(output))
        if drift:
            finding = Finding(SCHEMA_DRIFT, drift.describe(result.layer))
            (failures if spec.contract.on_drift == "fail" else warnings).append(finding)
    return Verdict(tuple(failures), tuple(warnings))


def too_many_rejects(result: LayerResult, limit: float | None) -> Finding | None:
    if limit is None:
        return None
    seen = result.rows + result.rejects
    share = result.rejects / seen if seen else 0.0
    if share <= limit:
        return None
    return Finding(TOO_MANY_REJECTS,
                   f"{result.layer}: {result.rejects} of {seen} rows rejected ({share:.2%}), "
                   f"more than its reject_limit {limit:.2%}")


def output_columns(output: Path) -> list[tuple[str, str]] | None:
    """The written layer's (name, type), types in DuckDB's spelling; None if it has no file."""
    try:
        columns = layer_schema(output)
    except FileNotFoundError:
        return None
    return [(c["name"], _canonical(c["type"])) for c in columns]


def schema_drift(contract: Contract, actual: list[tuple[str, str]] | None) -> Drift:
    """Added, missing and retyped columns. An output without files has nothing to compare."""
    if actual is None:
        return Drift()
    expected = {name.lower(): (name, type_) for name, type_ in contract.columns.items()}
    found = {name.lower(): (name, type_) for name, type_ in actual}
    drift = Drift()
    for key, (name, type_) in found.items():
        if key not in expected:
            drift.added.append((name, type_))
        elif expected[key][1] != type_:
            drift.retyped.append((name, expected[key][1], type_))
    for key, (name, type_) in expected.items():
        if key not in found:
            drift.missing.append((name, type_))
    return drift


def _canonical(type_: str) -> str:
    """A written type in DuckDB's spelling; a type DuckDB cannot name is kept as read."""
    try:
        return canonical_type(type_)
    except ValueError:
        return type_
