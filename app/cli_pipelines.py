"""`strata pipelines …`: apply a pipeline from a file, list, show, run, backfill, pause.

Exit codes as for `strata jobs …`: 0 ok; 1 a waited run (or a backfill's run) ended Failed or
Cancelled; 2 usage error; 3 the API answered with an error; 4 Strata unreachable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli_client import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    AsJson,
    Token,
    Url,
    _api,
    _doc,
    _emit,
    _follow,
    _load_spec,
    _show,
)
from app.domain.states import STOPPED_STATUSES, JobStatus

if TYPE_CHECKING:
    from rich.console import RenderableType

    from app.client import Backfill, Pipeline, PipelineList

pipelines_app = typer.Typer(help="Apply, run, backfill and schedule pipelines.",
                            no_args_is_help=True, add_completion=False)

Name = Annotated[str, typer.Argument(help="The pipeline's name.", show_default=False)]
BACKFILL_POLL_SECONDS = 1.0


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`k=v` pairs → a dict (the service types each value by the pipeline's declaration)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        values[key.strip()] = value
    return values


@pipelines_app.command()
def apply(
    file: Annotated[Path, typer.Argument(
        help="Pipeline file, YAML or JSON: {name, description, params, parameters, schedule, "
             "history}; - reads stdin.", allow_dash=True, show_default=False)],
    name: Annotated[str | None, typer.Option(help="Override the file's name.")] = None,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Create or update a pipeline from a file (a new version only when it changed)."""
    if str(file) != "-" and not file.is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    body = _load_spec(file)
    pipeline_name = name or body.pop("name", None)
    body.pop("name", None)
    if not isinstance(pipeline_name, str) or not pipeline_name:
        raise typer.BadParameter(f"{file} has no name (or give --name)", param_hint="FILE")
    with _api(url, token) as client:
        from app.client import NotFound

        try:
            before: int | None = client.get_pipeline(pipeline_name).version
        except NotFound:
            before = None
        pipeline, created = client.apply_pipeline(pipeline_name, body)
    if json_:
        _emit(_doc(pipeline))
        return
    what = ("created" if created else "unchanged" if pipeline.version == before
            else "configured")
    typer.echo(f"pipeline {pipeline.name} {what} (version {pipeline.version})" +
               _next_fire(pipeline))


def _next_fire(pipeline: Pipeline) -> str:
    if pipeline.schedule is None:
        return ""
    if pipeline.suspend or pipeline.schedule.next_fire_at is None:
        return "; schedule suspended"
    return f"; next run {pipeline.schedule.next_fire_at.isoformat().replace('+00:00', 'Z')}"


@pipelines_app.command("ls")
def list_pipelines(
    limit: Annotated[int, typer.Option(min=1, max=500, help="Page size.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (by name).")] = 0,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """List pipelines: version, schedule, next fire time, latest ticks."""
    with _api(url, token) as client:
        page = client.list_pipelines(limit=limit, offset=offset)
    if json_:
        _emit(_doc(page))
    elif not page.pipelines:
        typer.echo("no pipelines")
    else:
        _show(_pipelines_table(page))


@pipelines_app.command()
def get(name: Name, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """Show one pipeline: schedule, parameters, latest ticks and their runs."""
    with _api(url, token) as client:
        pipeline = client.get_pipeline(name)
    if json_:
        _emit(_doc(pipeline))
    else:
        _show(_pipeline_detail(pipeline))


@pipelines_app.command()
def run(
    name: Name,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="A parameter value, NAME=VALUE (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w",
                                       help="Follow the run until it stops.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Running again with the same key returns the same job.")] = None,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Run a pipeline now (with --wait, show each stage's progress until it stops)."""
    values = parse_params(param or [])
    with _api(url, token) as client:
        job = client.run_pipeline(name, values, idempotency_key=idempotency_key)
        if not wait:
            if json_:
                _emit(_doc(job))
            else:
                typer.echo(f"job {job.job_id} submitted ({name} run): {job.status}")
            return
        if not json_:
            typer.echo(f"job {job.job_id} submitted ({name} run)")
        _follow(client, job.job_id, json_)


@pipelines_app.command()
def backfill(
    name: Name,
    start: Annotated[str, typer.Option("--from", help="First day (2026-01-01) or time.",
                                       show_default=False)],
    end: Annotated[str, typer.Option("--to", help="Last day (inclusive) or time.",
                                     show_default=False)],
    max_active: Annotated[int, typer.Option(min=1, max=100,
                                            help="Runs active at once.")] = 2,
    wait: Annotated[bool, typer.Option("--wait", "-w",
                                       help="Follow the runs until all stop.")] = False,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """One run per schedule tick from --from to --to that has none yet, max-active at a time."""
    with _api(url, token) as client:
        created = client.backfill(name, start, end, max_active)
        if not json_:
            ticks = ", ".join(_when(t) for t in created.scheduled_for) or "none (all ran)"
            typer.echo(f"backfill {created.backfill_id}: {len(created.scheduled_for)} run(s) "
                       f"for {ticks}")
        if not wait:
            if json_:
                _emit(_doc(created))
            return
        try:
            done = _wait_backfill(client, name, created, quiet=json_)
        except KeyboardInterrupt:
            typer.echo(f"\nstopped watching; the backfill goes on: "
                       f"strata pipelines get {name}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if json_:
        _emit(_doc(done))
    failed = [r for r in done.runs if r.status not in (None, JobStatus.SUCCEEDED.value)]
    if not json_:
        typer.echo(f"backfill {done.backfill_id}: {len(done.runs) - len(failed)} succeeded, "
                   f"{len(failed)} failed")
    if failed:
        raise typer.Exit(EXIT_JOB_FAILED)


def _wait_backfill(client: Any, name: str, backfill: Backfill, *, quiet: bool) -> Backfill:
    """Poll the backfill until each of its runs stopped, a line per change of a run."""
    stopped = {s.value for s in STOPPED_STATUSES} | {"Deleted"}
    seen: dict[str, str | None] = {}
    while True:
        backfill = client.get_backfill(name, backfill.backfill_id)
        for item in backfill.runs:
            key = _when(item.scheduled_for)
            if seen.get(key, "") != item.status:
                seen[key] = item.status
                if not quiet:
                    typer.echo(f"  {key}  {item.status or 'waiting'}"
                               + (f"  {item.job_id}" if item.job_id else ""), err=True)
        if all(item.status in stopped for item in backfill.runs):
            return backfill
        time.sleep(BACKFILL_POLL_SECONDS)


def _pause(action: str, summary: str) -> None:
    def command(name: Name, url: Url = None, token: Token = None,
                json_: AsJson = False) -> None:
        with _api(url, token) as client:
            pipeline = getattr(client, f"{action}_pipeline")(name)
        if json_:
            _emit(_doc(pipeline))
        else:
            done = {"suspend": "suspended", "resume": "resumed"}[action]
            typer.echo(f"pipeline {pipeline.name} {done}"
                       + ("" if pipeline.suspend else _next_fire(pipeline)))

    command.__doc__ = summary
    pipelines_app.command(action)(command)


_pause("suspend", "Pause a pipeline's schedule (manual runs and backfills still work).")
_pause("resume", "Resume a pipeline's schedule from now on.")


@pipelines_app.command()
def delete(name: Name, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """Delete a pipeline and stop its schedule; the jobs it made stay."""
    with _api(url, token) as client:
        client.delete_pipeline(name)
    if json_:
        _emit({"name": name, "deleted": True})
    else:
        typer.echo(f"pipeline {name} deleted")


# -- how it looks -------------------------------------------------------------------------------


def _when(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z")) if moment is not None else "-"


def _schedule_words(pipeline: Pipeline) -> str:
    schedule = pipeline.schedule
    if schedule is None:
        return "manual only"
    if schedule.cron is not None:
        return f"{schedule.cron} {schedule.timezone}"
    return f"every {schedule.interval_seconds}s"


def _pipelines_table(page: PipelineList) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False,
                  caption="ticks, oldest first: ● run  ○ skipped  ✗ missed  · waiting")
    for column in ("NAME", "VER", "SCHEDULE", "NEXT RUN", "TICKS"):
        table.add_column(column, no_wrap=True)
    for pipeline in page.pipelines:
        next_run = "suspended" if pipeline.suspend and pipeline.schedule else _when(
            pipeline.schedule.next_fire_at if pipeline.schedule else None)
        marks = Text()
        for tick in reversed(pipeline.last_ticks[:8]):
            marks.append(*TICK_MARKS.get(tick.outcome, ("?", "")))
        table.add_row(pipeline.name, str(pipeline.version), _schedule_words(pipeline), next_run,
                      marks if marks.plain else "-")
    return table


TICK_MARKS = {"created": ("●", "green"), "skipped_overlap": ("○", "yellow"),
              "skipped_no_input": ("○", "yellow"), "missed": ("✗", "red"),
              "pending": ("·", "blue")}


def _pipeline_detail(pipeline: Pipeline) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble((pipeline.name, "bold"), f"  version {pipeline.version}  ",
                         _schedule_words(pipeline), _next_fire(pipeline))
    lines: list[Any] = [head]
    if pipeline.description:
        lines.append(Text(pipeline.description))
    lines.append(Text(f"source: {pipeline.params.source.path}"))
    for pname, decl in pipeline.parameters.items():
        default = f" = {decl.default}" if decl.default is not None else " (required)"
        lines.append(Text(f"  parameter {pname}: {decl.type}{default}"))
    if pipeline.last_ticks:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("SCHEDULED FOR", "TRIGGER", "OUTCOME", "JOB"):
            table.add_column(column, no_wrap=True)
        for tick in pipeline.last_ticks:
            table.add_row(_when(tick.scheduled_for), tick.trigger, tick.outcome,
                          tick.job_id or "-")
        lines.append(table)
    return Group(*lines)
