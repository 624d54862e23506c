"""What a stage reads, found the same way by every engine.

* LandingToODS: the source glob, resolved in Python, confined to the landing directory after
  resolving symlinks, sorted by path relative to the landing directory (the `_source_file` value).
* Other stages: the previous layer's Parquet files of the same job, and nothing outside its folder.

The row total feeds progress: exact for Parquet (footers), an estimate for CSV and JSONL (file
size and the line length of the first MiB), 0 when unknown (compressed text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from app.domain import layout
from app.domain.params import Source, check_relative_path
from app.domain.states import Stage
from app.executor.engine.base import StageFailed

PARQUET_SUFFIX = ".parquet"
# Characters a reader may take for a glob (DuckDB) or an escape (Spark): a landing file whose
# resolved path holds one could be read as other files, so it is refused by both engines.
GLOB_CHARS = re.compile(r"[*?\[\]{}\\]")
_PREVIOUS_STAGE = {"ods": Stage.LANDING_TO_ODS, "dwd": Stage.ODS_TO_DWD, "dws": Stage.DWD_TO_DWS}
_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")


@dataclass(frozen=True)
class StageInputs:
    files: list[Path]
    """Resolved absolute paths the engine may read."""
    names: list[str]
    """For landing files: the path relative to the landing directory (lineage); else empty."""
    total: int
    """Input rows: exact for Parquet, an estimate for CSV/JSONL (0 if unknown)."""
    exact: bool


def landing_inputs(
    landing_dir: Path, source: Source, replacements: Sequence[tuple[str, str]]
) -> StageInputs:
    """The source's files under the (resolved) landing directory, in relative-path order: the
    claimed `files` of an incremental run (exactly those, never the glob), else the glob's."""
    try:
        check_relative_path(source.path)
    except ValueError as exc:
        raise StageFailed(f"source path {source.path!r}: {exc}") from None
    if not landing_dir.is_dir():
        raise StageFailed("the landing directory does not exist")
    try:
        found = ([landing_dir / name for name in source.files] if source.files is not None
                 else landing_dir.glob(source.path))
        matches = sorted(found, key=lambda p: p.relative_to(landing_dir).as_posix())
    except (ValueError, NotImplementedError) as exc:
        raise StageFailed(f"source path {source.path!r}: {exc}") from None
    files: list[Path] = []
    names: list[str] = []
    for match in matches:
        name = match.relative_to(landing_dir).as_posix()
        try:
            resolved = match.resolve(strict=True)
        except (OSError, RuntimeError):
            raise StageFailed(f"source file '{name}' cannot be resolved") from None
        if not resolved.is_relative_to(landing_dir):
            raise StageFailed(f"source file '{name}' points outside the landing directory; refused")
        if not resolved.is_file():
            continue  # a directory the glob matched
        if GLOB_CHARS.search(str(resolved)):
            raise StageFailed(
                f"source file '{name}': file names with glob characters (*?[]{{}}\\) "
                "cannot be read"
            )
        files.append(resolved)
        names.append(name)
    if not files:
        raise StageFailed(f"source path '{source.path}' matched no files in the landing directory")
    if source.format == "parquet":
        return StageInputs(files, names, parquet_rows(files, replacements), exact=True)
    return StageInputs(files, names, estimate_lines(files, source), exact=False)


def sample_inputs(inputs: StageInputs, rows: int, source: Source) -> StageInputs:
    """The landing inputs of a dry run that reads only the first `rows` source rows.

    Parquet files past those rows are dropped (their footers say how many rows each holds); text
    files cannot be counted without reading them, so the engine cuts those as it reads.
    """
    if source.format != "parquet":
        total = min(inputs.total, rows) if inputs.total else 0
        return StageInputs(inputs.files, inputs.names, total, exact=False)
    files: list[Path] = []
    names: list[str] = []
    seen = 0
    for path, name in zip(inputs.files, inputs.names, strict=True):
        if seen >= rows:
            break
        files.append(path)
        names.append(name)
        seen += parquet_rows([path])
    return StageInputs(files, names, min(seen, rows), exact=True)


def layer_inputs(
    warehouse_dir: Path, job_id: str, input_layer: str, replacements: Sequence[tuple[str, str]]
) -> StageInputs:
    """The Parquet files of the job's previous layer; a file from elsewhere is refused."""
    folder = layout.layer_dir(warehouse_dir, job_id, input_layer)
    previous = _PREVIOUS_STAGE[input_layer]
    if not folder.is_dir():
        raise StageFailed(
            f"input layer '{input_layer}' of job {job_id} is missing; run {previous.value} first"
        )
    files = sorted(p.resolve() for p in folder.glob(f"*{PARQUET_SUFFIX}"))
    if not files:
        raise StageFailed(
            f"input layer '{input_layer}' of job {job_id} has no Parquet "
            f"files; run {previous.value} again"
        )
    job_dir = layout.job_dir(warehouse_dir, job_id).resolve()
    for path in files:
        if not path.is_relative_to(job_dir) or not path.is_file():
            raise StageFailed(f"input layer '{input_layer}' holds a foreign file; refused")
    return StageInputs(files, [], parquet_rows(files, replacements), exact=True)


def parquet_rows(files: Sequence[Path], replacements: Sequence[tuple[str, str]] = ()) -> int:
    """Rows of Parquet files, from their footers; a broken file fails without service paths."""
    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path).num_rows
        except Exception as exc:  # pyarrow raises several types for a broken file
            name, message = str(path), str(exc)
            for absolute, relative in sorted(replacements, key=lambda pair: -len(pair[0])):
                name = name.replace(absolute, relative)
                message = message.replace(absolute, relative)
            raise StageFailed(f"'{name}' is not a readable Parquet file: {message}") from None
    return total


def estimate_lines(files: Sequence[Path], source: Source) -> int:
    """Rows of text files, estimated from their size and the line length of the first MiB."""
    options = source.options
    if options.get("compression") not in (None, "none", "auto") or any(
        p.suffix in _COMPRESSED for p in files
    ):
        return 0
    try:
        with files[0].open("rb") as handle:
            sample = handle.read(1 << 20)
        size = sum(p.stat().st_size for p in files)
    except OSError:
        return 0
    lines = sample.count(b"\n")
    if not sample or lines == 0:
        return len(files)
    header = 1 if source.format == "csv" and options.get("header", True) else 0
    return max(0, round(size * lines / len(sample) - header * len(files)))
