"""`strata webhooks …`: tell a URL when the caller's jobs end (same exit codes as `strata jobs`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli_client import AsJson, Token, Url, _api, _doc, _emit, _show
from app.domain.webhooks import EventType

if TYPE_CHECKING:
    from rich.table import Table

    from app.api.webhook_schemas import DeliveryPublic, WebhookPublic

webhooks_app = typer.Typer(help="Send job events to a URL, signed (Standard Webhooks).",
                           no_args_is_help=True, add_completion=False)

WebhookId = Annotated[str, typer.Argument(help="The webhook's id.", show_default=False)]
DEFAULT_EVENTS = [EventType.JOB_SUCCEEDED, EventType.JOB_FAILED, EventType.JOB_CANCELLED]


@webhooks_app.command("add")
def add(
    url_: Annotated[str, typer.Argument(metavar="URL", help="Where to POST the events.",
                                        show_default=False)],
    event: Annotated[list[EventType] | None, typer.Option(
        "--event", "-e", help="An event to send (repeat it); default: the job's end "
                              "(job.succeeded, job.failed, job.cancelled).")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only jobs of this pipeline.")] = None,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """Add a webhook; prints its secret, which the service never shows again."""
    events = [str(e) for e in (event or DEFAULT_EVENTS)]
    with _api(url, token) as client:
        hook = client.create_webhook(url_, events, pipeline)
    if json_:
        _emit(_doc(hook))
        return
    typer.echo(f"webhook {hook.webhook_id} → {hook.url} ({', '.join(hook.events)})")
    typer.echo(f"secret (shown only now): {hook.secret}")


@webhooks_app.command("ls")
def list_webhooks(url: Url = None, token: Token = None, json_: AsJson = False) -> None:
    """The caller's webhooks (never their secrets)."""
    with _api(url, token) as client:
        page = client.list_webhooks()
    if json_:
        _emit(_doc(page))
    elif not page.webhooks:
        typer.echo("no webhooks")
    else:
        _show(webhooks_table(page.webhooks))


@webhooks_app.command("rm")
def remove(webhook_id: WebhookId, url: Url = None, token: Token = None,
           json_: AsJson = False) -> None:
    """Remove a webhook; its pending deliveries are dropped."""
    with _api(url, token) as client:
        client.delete_webhook(webhook_id)
    if json_:
        _emit({"webhook_id": webhook_id, "deleted": True})
    else:
        typer.echo(f"webhook {webhook_id} removed")


@webhooks_app.command("deliveries")
def deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Page size.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")] = 0,
    url: Url = None, token: Token = None, json_: AsJson = False,
) -> None:
    """A webhook's deliveries, newest first: attempts, last answer, next attempt."""
    with _api(url, token) as client:
        page = client.deliveries(webhook_id, limit=limit, offset=offset)
    if json_:
        _emit(_doc(page))
    elif not page.deliveries:
        typer.echo("no deliveries")
    else:
        _show(deliveries_table(page.deliveries))


# -- how they look ------------------------------------------------------------------------------

def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


def webhooks_table(hooks: Iterable[WebhookPublic]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    for column in ("URL", "EVENTS", "PIPELINE", "CREATED"):
        table.add_column(column, overflow="fold")
    for hook in hooks:
        table.add_row(hook.webhook_id, hook.url, ", ".join(hook.events), hook.pipeline or "-",
                      _when(hook.created_at))
    return table


def deliveries_table(rows: Iterable[DeliveryPublic]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    for column in ("TYPE", "JOB", "STATUS", "ATTEMPTS", "LAST", "NEXT ATTEMPT"):
        table.add_column(column, overflow="fold")
    style = {"delivered": "green", "failed": "bold red", "pending": "yellow"}
    for row in rows:
        last = str(row.last_status) if row.last_status is not None else (row.last_error or "-")
        table.add_row(row.id, row.type, row.job_id or "-",
                      f"[{style.get(row.status, '')}]{row.status}[/]", str(row.attempts), last,
                      _when(row.next_attempt_at))
    return table
