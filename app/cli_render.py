"""How `strata jobs …` and `strata landing …` look: rich tables, and a job's live stage progress.

Kept apart from the commands so the commands read as "call the API, show the answer".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from app.client import DryRun, Event, Job, JobList, LandingFile
from app.domain.states import STAGES, STOPPED_STATUSES, Stage

STATUS_STYLE = {
    "Pending": "yellow", "Completed": "cyan", "Succeeded": "bold green", "Failed": "bold red",
    "Cancelled": "magenta",
}


def stdout() -> Console:
    return Console(soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=False)


def progress_console() -> Console:
    """Live progress belongs on the terminal: stdout when it is one, else stderr (logs)."""
    return Console(stderr=not sys.stdout.isatty())


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, "blue"))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _age(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return "-"
    seconds = max(((now or datetime.now(UTC)) - at).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _duration(job: Job) -> str | None:
    if job.started_at is None or job.ended_at is None:
        return None
    return f"{(job.ended_at - job.started_at).total_seconds():.1f}s"


def progress_of(job: Job) -> str:
    """A one-cell summary of where a job is: `DWDToDWS 62%` or the end state's layer count."""
    batch = job.results.get("batch") or {}
    if job.status in {s.value for s in STAGES} and batch.get("stage") == job.status:
        return f"{float(batch.get('percent') or 0):.0f}%"
    done = len(job.results.get("layers") or {})
    return f"{done}/{len(STAGES)} layers"


def failure_of(job: Job) -> str | None:
    """Why a Failed or Cancelled job stopped, from its conditions."""
    for condition in reversed(job.conditions):
        if condition.type in ("Failed", "Cancelled") and condition.status == "True":
            return condition.message or condition.reason
    for condition in reversed(job.conditions):
        if condition.status == "False":
            return condition.message or condition.reason
    return None


def layer_summary(info: dict[str, Any]) -> str:
    parts = [f"{_count(info.get('rows'))} rows"]
    for key in ("rejects", "deduped"):
        if info.get(key):
            parts.append(f"{_count(info[key])} {key}")
    if isinstance(info.get("seconds"), int | float):
        parts.append(f"{info['seconds']:.1f}s")
    return " · ".join(parts)


# -- tables -------------------------------------------------------------------------------------


def jobs_table(page: JobList) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False,
                  caption=f"{len(page.jobs)} of {page.total}" if page.total > len(page.jobs)
                  else None)
    table.add_column("JOB ID", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    for job in page.jobs:
        table.add_row(job.job_id, job.name, status_text(job.status), progress_of(job),
                      _age(job.created_at))
    return table


def layers_table(job: Job) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, right in (("STAGE", False), ("LAYER", False), ("ROWS", True), ("REJECTS", True),
                        ("DEDUPED", True), ("SECONDS", True)):
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    layers = job.results.get("layers") or {}
    for stage in STAGES:
        info = layers.get(stage.layer)
        if info is None:
            table.add_row(stage.value, stage.layer, "-", "-", "-", "-", style="dim")
            continue
        seconds = info.get("seconds")
        table.add_row(stage.value, stage.layer, _count(info.get("rows")),
                      _count(info.get("rejects", 0)), _count(info.get("deduped", 0)),
                      f"{seconds:.2f}" if isinstance(seconds, int | float) else "-")
    return table


CELL_WIDTH = 24
"""A dry run's sample cell is cut to this many characters."""


def dry_run_view(result: DryRun, show: int = 3) -> RenderableType:
    """`jobs submit --dry-run`: per layer its counts, then its columns with their types and
    first rows side by side (one line per column, so a wide layer still fits a terminal)."""
    parts: list[RenderableType] = [
        Text(f"dry run on the first {result.sample_rows:,} source rows: nothing was created",
             style="bold")]
    for name, layer in result.layers.items():
        parts.append(Text(""))
        parts.append(Text.assemble(
            (name, "bold cyan"), f"  {layer.rows:,} rows  {layer.rejects:,} rejects  "
                                 f"{layer.deduped:,} deduped"))
        parts.append(layer_sample_table(layer.columns, layer.sample[:show]))
    return Group(*parts)


def layer_sample_table(columns: Iterable[Any], rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("COLUMN", style="bold", no_wrap=True)
    table.add_column("TYPE", style="dim", no_wrap=True)
    for index in range(len(rows)):
        table.add_column(f"ROW {index + 1}", no_wrap=True, overflow="ellipsis",
                         max_width=CELL_WIDTH)
    for column in columns:
        table.add_row(column.name, column.type, *(_cell(row.get(column.name)) for row in rows))
    return table


def _cell(value: Any) -> Text:
    """One value in a table of rows: NULL dimmed, nested values as JSON."""
    if value is None:
        return Text("NULL", style="dim")
    return Text(json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list)
                else str(value))


def job_detail(job: Job) -> RenderableType:
    """`jobs get`: the job's facts, its layers and its conditions."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("Job", job.job_id)
    facts.add_row("Name", job.name)
    if job.description:
        facts.add_row("Description", job.description)
    facts.add_row("Owner", job.owner)
    facts.add_row("Status", Text.assemble(status_text(job.status),
                                          " (suspended)" if job.suspend else ""))
    facts.add_row("Attempt", str(job.attempt))
    facts.add_row("Source", f"{job.params.source.path} ({job.params.source.format})")
    facts.add_row("Created", job.created_at.isoformat())
    if job.started_at:
        facts.add_row("Started", job.started_at.isoformat())
    if job.ended_at:
        facts.add_row("Ended", f"{job.ended_at.isoformat()} ({_duration(job)})")
    parts: list[RenderableType] = [facts, Text(""), layers_table(job)]
    if job.conditions:
        conditions = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
        for name in ("CONDITION", "STATUS", "REASON", "MESSAGE"):
            conditions.add_column(name, overflow="fold")
        for c in job.conditions:
            conditions.add_row(c.type, c.status, c.reason, c.message)
        parts += [Text(""), conditions]
    return Group(*parts)


def events_table(events: Iterable[Event]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("AT", "EVENT", "FROM", "TO", "ATTEMPT", "MESSAGE"):
        table.add_column(name, overflow="fold", no_wrap=name != "MESSAGE")
    for e in events:
        table.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.event, e.from_status or "-",
                      status_text(e.to_status), str(e.attempt), e.message)
    return table


def landing_table(files: Iterable[LandingFile]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("PATH", overflow="fold")
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("MODIFIED", no_wrap=True)
    for f in files:
        table.add_row(f.path, _size(f.size), f.modified_at.strftime("%Y-%m-%d %H:%M:%S"))
    return table


def reasons_table(reasons: dict[str, int]) -> Table:
    """Rejected rows per check (`_reject_reason`), most first, with their share."""
    total = sum(reasons.values()) or 1
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("REASON")
    table.add_column("ROWS", justify="right")
    table.add_column("SHARE", justify="right")
    for reason, count in reasons.items():
        table.add_row(reason, f"{count:,}", f"{count / total:.1%}")
    return table


def rows_table(rows: list[dict[str, Any]], width: int, first: int = 1) -> RenderableType:
    """Rows as the API returned them, `_reject_reason` first: a table when it fits in `width`,
    else one block of `column  value` lines per row (NULL shown dim)."""
    rows = [{"_reject_reason": r["_reject_reason"], **r} if "_reject_reason" in r else r
            for r in rows]
    names = list(rows[0]) if rows else []
    cells = [[_cell(v) for v in row.values()] for row in rows]
    widths = [max([len(n), *(len(c.plain) for c in column)])
              for n, column in zip(names, zip(*cells, strict=True), strict=True)]
    if sum(w + 2 for w in widths) <= width:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in names:
            table.add_column(name, no_wrap=True)
        for row_cells in cells:
            table.add_row(*row_cells)
        return table
    blocks: list[RenderableType] = []
    for index, row_cells in enumerate(cells, first):
        block = Table(box=None, show_header=False, pad_edge=False, title=f"row {index}",
                      title_justify="left", title_style="bold")
        block.add_column(style="bold")
        block.add_column(overflow="fold")
        for name, cell in zip(names, row_cells, strict=True):
            block.add_row(name, cell)
        blocks.append(block)
    return Group(*blocks)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


def final_line(job: Job) -> Text:
    """The last word on a waited job: its end state, how long, and why it failed."""
    text = Text.assemble(status_text(job.status), f"  {job.name} ({job.job_id})")
    if took := _duration(job):
        text.append(f" in {took}")
    ds = (job.results.get("layers") or {}).get("ds")
    if job.status == "Succeeded" and ds:
        text.append(f": {_count(ds.get('rows'))} rows served")
    if job.status in ("Failed", "Cancelled") and (why := failure_of(job)):
        text.append(f": {why}", style="red")
    return text


# -- live progress ------------------------------------------------------------------------------


class _Header:
    """The line above the bars; replaced, not mutated, at each update."""

    def __init__(self) -> None:
        self.text = Text("")

    def __rich__(self) -> Text:
        return self.text


class JobProgress:
    """A job's progress, one bar per stage, fed with each new view of the job.

    On a terminal the bars are live; elsewhere (a log file, CI) each stage start and finish is
    one plain line, so logs stay readable instead of filling with redraws.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live_mode = console.is_terminal and not console.is_dumb_terminal
        self.header = _Header()
        self.progress = Progress(
            TextColumn("{task.description:<13}"), BarColumn(bar_width=30),
            TaskProgressColumn(), TextColumn("{task.fields[detail]}"), console=console,
        )
        self.tasks: dict[Stage, TaskID] = {
            stage: self.progress.add_task(stage.value, total=100, detail="") for stage in STAGES
        }
        self.live = Live(Group(self.header, self.progress), console=console,
                         refresh_per_second=8, transient=False)
        self._said: set[str] = set()

    def __enter__(self) -> JobProgress:
        if self.live_mode:
            self.live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live_mode:
            self.live.stop()

    def update(self, job: Job) -> None:
        layers = job.results.get("layers") or {}
        batch = job.results.get("batch") or {}
        self.header.text = Text.assemble(f"{job.name} ({job.job_id})  ", status_text(job.status))
        self._say(f"start:{job.job_id}", f"job {job.job_id} ({job.name}): {job.status}")
        for stage in STAGES:
            completed, detail = self._stage_view(job, stage, layers, batch)
            self.progress.update(self.tasks[stage], completed=completed, detail=detail)
        if self.live_mode:
            self.live.refresh()

    def _stage_view(self, job: Job, stage: Stage, layers: dict[str, Any],
                    batch: dict[str, Any]) -> tuple[float, str]:
        info = layers.get(stage.layer)
        if info is not None:
            summary = layer_summary(info)
            self._say(f"done:{stage}", f"{stage.value:<13} done     {stage.layer}: {summary}")
            return 100.0, summary
        ours = batch.get("stage") == stage.value
        percent = float(batch.get("percent") or 0) if ours else 0.0
        if job.status == stage.value:
            self._say(f"run:{stage}", f"{stage.value:<13} running")
            if not ours:
                return 0.0, "starting"
            detail = f"{_count(batch.get('processed'))}/{_count(batch.get('total'))} rows"
            if int(batch.get("attempt") or 1) > 1:
                detail += f" (attempt {batch['attempt']})"
            return percent, detail
        if job.status in STOPPED_STATUSES and ours:
            word = job.status.lower()
            self._say(f"end:{stage}", f"{stage.value:<13} {word}")
            return percent, word
        return 0.0, ""

    def _say(self, key: str, line: str) -> None:
        """In log mode, print each line once."""
        if self.live_mode or key in self._said:
            return
        self._said.add(key)
        self.console.print(line, highlight=False, markup=False)
