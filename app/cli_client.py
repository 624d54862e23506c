"""`strata jobs …` and `strata landing …`: the API from a terminal or a script.

Exit codes scripts can rely on: 0 ok; 1 a waited job ended Failed or Cancelled; 2 usage error;
3 the API answered with an error (its problem title/detail on stderr); 4 Strata unreachable.
`--json` prints exactly one JSON document on stdout and nothing else (no progress).
The client and rich are imported inside the commands so `strata serve` and `--help` stay quick.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from app.domain.states import JobStatus

if TYPE_CHECKING:
    from pydantic import BaseModel

    from app.client import Job, StrataClient

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_API_ERROR, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

jobs_app = typer.Typer(help="Submit, follow and manage jobs.", no_args_is_help=True,
                       add_completion=False)
landing_app = typer.Typer(help="Upload raw files and list what has landed.",
                          no_args_is_help=True, add_completion=False)

Url = Annotated[str | None, typer.Option(
    "--url", envvar="STRATA_URL", show_default=False,
    help="Strata's base URL (default http://127.0.0.1:8000).")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="STRATA_TOKEN", show_default=False,
    help="Bearer token (one of STRATA_API_TOKENS on the server).")]
AsJson = Annotated[bool, typer.Option(
    "--json", help="Print only the JSON the API returned (for scripts; no progress).")]
JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


# -- plumbing -----------------------------------------------------------------------------------


@contextmanager
def _api(url: str | None, token: str | None) -> Iterator[StrataClient]:
    """A client whose failures become the documented exit codes, with the reason on stderr."""
    from app.client import StrataClient, StrataError, Unreachable

    try:
        with StrataClient(url, token) as client:
            yield client
    except StrataError as exc:
        typer.echo(f"Error: {exc.title} ({exc.status})" + (f": {exc.detail}" if exc.detail
                                                             else ""), err=True)
        for error in exc.errors:
            typer.echo(f"  {error.get('field', '?')}: {error.get('message', '')}", err=True)
        raise typer.Exit(EXIT_API_ERROR) from None
    except Unreachable as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None


def _emit(document: Any) -> None:
    """The one JSON document of a `--json` command."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _doc(model: BaseModel) -> Any:
    """A response model as the API sent it (these are the service's own response models)."""
    return model.model_dump(mode="json")


def _show(renderable: Any) -> None:
    from app.cli_render import stdout

    stdout().print(renderable, soft_wrap=True)


def _show_job(job: Job, json_: bool) -> None:
    if json_:
        _emit(_doc(job))
        return
    from app.cli_render import final_line

    _show(final_line(job))


def _follow(client: StrataClient, job_id: str, json_: bool) -> None:
    """Wait for the job to stop (live progress unless --json); exit 1 unless it Succeeded."""
    from app.cli_render import JobProgress, final_line, progress_console

    try:
        if json_:
            job = client.wait(job_id)
        else:
            with JobProgress(progress_console()) as progress:
                job = client.wait(job_id, on_update=progress.update)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped watching; the job keeps running: strata jobs watch {job_id}",
                   err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if json_:
        _emit(_doc(job))
    else:
        _show(final_line(job))
    if job.status != JobStatus.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_FAILED)


def _load_spec(spec: Path) -> dict[str, Any]:
    """A job spec from JSON or YAML (by extension; `-` reads either from stdin)."""
    text = sys.stdin.read() if str(spec) == "-" else spec.read_text(encoding="utf-8")
    try:
        if spec.suffix.lower() == ".json":
            loaded = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON, so it also reads JSON from stdin

            loaded = yaml.safe_load(text)
    except Exception as exc:  # a JSON or YAML syntax error, with its position
        raise typer.BadParameter(f"cannot parse {spec}: {exc}", param_hint="SPEC") from None
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{spec} must hold one object with name and params",
                                 param_hint="SPEC")
    return loaded


# -- jobs ---------------------------------------------------------------------------------------


@jobs_app.command()
def submit(
    spec: Annotated[Path, typer.Argument(
        help="Job spec: JSON or YAML ({name, description, params}); - reads stdin.",
        allow_dash=True, show_default=False)],
    wait: Annotated[bool, typer.Option("--wait", "-w",
                                       help="Follow the job until it stops.")] = False,
    name: Annotated[str | None, typer.Option(help="Override the spec's name.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Resubmitting with the same key returns the same job.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Create nothing: run every layer on a sample and show it.")] = False,
    sample_rows: Annotated[int | None, typer.Option(
        min=1, max=10_000, help="With --dry-run: source rows to read (default 1,000).")] = None,
    show: Annotated[int, typer.Option(
        min=0, max=20, help="With --dry-run: sample rows to print per layer.")] = 3,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Submit a job (and with --wait, show each stage's progress until it stops)."""
    if str(spec) != "-" and not spec.is_file():
        raise typer.BadParameter(f"{spec} is not a file", param_hint="SPEC")
    body = _load_spec(spec)
    if name:
        body["name"] = name
    if dry_run:
        _dry_run(body, sample_rows, show, url, token, json_)
        return
    with _api(url, token) as client:
        job = client.create_job(body, idempotency_key=idempotency_key)
        if not wait:
            if json_:
                _emit(_doc(job))
            else:
                typer.echo(f"job {job.job_id} submitted ({job.name}): {job.status}")
            return
        if not json_:
            typer.echo(f"job {job.job_id} submitted ({job.name})")
        _follow(client, job.job_id, json_)


def _dry_run(body: dict[str, Any], sample_rows: int | None, show: int, url: str | None,
             token: str | None, json_: bool) -> None:
    with _api(url, token) as client:
        result = client.dry_run(body, sample_rows)
    if json_:
        _emit(_doc(result))
        return
    from app.cli_render import dry_run_view

    _show(dry_run_view(result, show))


@jobs_app.command()
def watch(job_id: JobId, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """Follow a job's stages until it stops; exit 1 if it Failed or was Cancelled."""
    with _api(url, token) as client:
        _follow(client, job_id, json_)


@jobs_app.command("ls")
def list_jobs(
    status: Annotated[JobStatus | None, typer.Option(
        case_sensitive=False, help="Only jobs in this state.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs of this name.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Page size.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")] = 0,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """List jobs, newest first."""
    with _api(url, token) as client:
        page = client.list_jobs(status=status.value if status else None, name=name,
                                limit=limit, offset=offset, pipeline=pipeline)
    if json_:
        _emit(_doc(page))
    elif not page.jobs:
        typer.echo("no jobs" + (f" (of {page.total})" if page.total else ""))
    else:
        from app.cli_render import jobs_table

        _show(jobs_table(page))


@jobs_app.command()
def get(job_id: JobId, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """Show one job: status, layers (rows, rejects) and conditions."""
    with _api(url, token) as client:
        job = client.get_job(job_id)
    if json_:
        _emit(_doc(job))
    else:
        from app.cli_render import job_detail

        _show(job_detail(job))


@jobs_app.command()
def events(job_id: JobId, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """A job's transitions, oldest first."""
    with _api(url, token) as client:
        found = client.events(job_id)
    if json_:
        _emit({"events": [_doc(e) for e in found]})
    else:
        from app.cli_render import events_table

        _show(events_table(found))


def _action(action: str, summary: str) -> None:
    def command(job_id: JobId, url: Url = None, token: Token = None,
                json_: AsJson = False) -> None:
        with _api(url, token) as client:
            job = getattr(client, action)(job_id)
        if json_:
            _emit(_doc(job))
        else:
            typer.echo(f"job {job.job_id}: {job.status}" + (" (suspended)" if job.suspend
                                                             else ""))

    command.__doc__ = summary
    jobs_app.command(action)(command)


_action("cancel", "Cancel a job: its running task stops and it ends Cancelled.")
_action("suspend", "Suspend a job: the running task finishes, no next one starts.")
_action("resume", "Resume a suspended job.")
_action("retry", "Retry a Failed or Cancelled job from the stage that did not finish.")


@jobs_app.command()
def delete(job_id: JobId, url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """Delete a job (its running task is cancelled first)."""
    with _api(url, token) as client:
        client.delete_job(job_id)
    if json_:
        _emit({"job_id": job_id, "deleted": True})
    else:
        typer.echo(f"job {job_id} deleted")


@jobs_app.command()
def output(
    job_id: JobId,
    format: Annotated[OutputFormat, typer.Option(
        "--format", "-f", case_sensitive=False, help="Rows as a JSON array or as CSV.")]
        = OutputFormat.json,
    limit: Annotated[int | None, typer.Option(
        min=1, help="At most this many rows (default: the service's, 1000).",
        show_default=False)] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many rows.")] = 0,
    out: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="Write to this file instead of stdout.")] = None,
    url: Url = None, token: Token = None,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """The served rows (DS layer) of a Succeeded job, streamed to stdout or a file."""
    fmt: Literal["json", "csv"] = "json" if json_ or format is OutputFormat.json else "csv"
    with _api(url, token) as client:
        chunks = client.iter_output(job_id, fmt, limit, offset)
        if out is not None:
            _write_file(out, chunks)
            return
        sink = typer.get_binary_stream("stdout")
        last = b""
        for chunk in chunks:
            sink.write(chunk)
            last = chunk or last
        if not last.endswith(b"\n"):
            sink.write(b"\n")
        sink.flush()


class LayerName(StrEnum):
    ods = "ods"
    dwd = "dwd"
    dws = "dws"
    ds = "ds"


@jobs_app.command()
def rejects(
    job_id: JobId,
    layer: Annotated[LayerName, typer.Argument(case_sensitive=False, show_default=False,
                                               help="The layer: ods, dwd, dws or ds.")],
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Rows to show.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many rejected rows.")] = 0,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Why rows were rejected: each check's count, then the rejected rows."""
    with _api(url, token) as client:
        reasons = client.reject_reasons(job_id, layer.value)
        rows = client.rejects(job_id, layer.value, limit, offset)
    total = sum(reasons.values())
    if json_:
        _emit({"job_id": job_id, "layer": layer.value, "total": total, "reasons": reasons,
               "rows": rows})
        return
    if not total:
        typer.echo(f"no rejected rows in {layer.value}")
        return
    from app.cli_render import reasons_table, rows_table, stdout

    _show(reasons_table(reasons))
    typer.echo("")
    _show(rows_table(rows, stdout().width, first=offset + 1))
    typer.echo(f"rows {offset + 1}-{offset + len(rows)} of {total:,}" if rows
               else f"no rows past {offset} (of {total:,})")


def _write_file(path: Path, chunks: Iterator[bytes]) -> None:
    """Stream into a sibling temp file and rename: an API error never leaves half a file."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        with tmp.open("wb") as sink:
            for chunk in chunks:
                sink.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(f"wrote {path}", err=True)


# -- landing ------------------------------------------------------------------------------------


@landing_app.command("put")
def landing_put(
    files: Annotated[list[Path], typer.Argument(
        exists=True, dir_okay=False, readable=True, help="Local files to upload.",
        show_default=False)],
    prefix: Annotated[str, typer.Option(
        help="Folder under the landing directory, e.g. orders/.")] = "",
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Upload files (streamed) into the landing directory, replacing same-named ones."""
    folder = prefix.strip("/")
    with _api(url, token) as client:
        landed = [client.put_landing(f"{folder}/{f.name}" if folder else f.name, f)
                  for f in files]
    if json_:
        _emit({"files": [_doc(f) for f in landed]})
    else:
        from app.cli_render import landing_table

        _show(landing_table(landed))


@landing_app.command("ls")
def landing_ls(
    prefix: Annotated[str | None, typer.Option(help="Only paths starting with this.")] = None,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """What has landed, by path."""
    with _api(url, token) as client:
        files = client.list_landing(prefix)
    if json_:
        _emit({"files": [_doc(f) for f in files]})
    elif not files:
        typer.echo("no files")
    else:
        from app.cli_render import landing_table

        _show(landing_table(files))
