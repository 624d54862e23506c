"""The `strata` command: serve, executor, migrate, openapi, and the API client (jobs, landing,
pipelines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
import uvicorn

from app.cli_client import jobs_app, landing_app
from app.cli_pipelines import pipelines_app
from app.cli_webhooks import webhooks_app
from app.settings import Settings

T = TypeVar("T")

cli = typer.Typer(help="Strata: data-layer jobs over HTTP.", no_args_is_help=True,
                  add_completion=False)
cli.add_typer(jobs_app, name="jobs")
cli.add_typer(landing_app, name="landing")
cli.add_typer(webhooks_app, name="webhooks")
cli.add_typer(pipelines_app, name="pipelines")


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (STRATA_HOST)."),
    port: int | None = typer.Option(None, help="Port (STRATA_PORT, default 8000)."),
) -> None:
    """Run the API and the watcher (and the embedded executor unless STRATA_EXECUTOR_URL is set)."""
    from app.main import create_app

    settings = _settings(host=host, port=port)
    _configure_logging(settings)
    application = _or_exit(lambda: create_app(settings))
    uvicorn.run(application, host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=20,
                log_config=None)


@cli.command()
def executor(
    host: str | None = typer.Option(None, help="Bind address (STRATA_HOST)."),
    port: int | None = typer.Option(
        None, help="Port (STRATA_PORT; when that is unset, 8001)."),
) -> None:
    """Run a standalone executor (the BatchManager's server)."""
    from app.executor.app import create_standalone_executor_app

    settings = _settings(host=host, port=port)
    _configure_logging(settings)
    application = _or_exit(lambda: create_standalone_executor_app(settings))
    uvicorn.run(application, host=settings.host, port=settings.executor_port(),
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=20,
                log_config=None)


def _settings(**flags: object) -> Settings:
    """The environment and `.env`, with the flags that were given on top."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]


def _or_exit(build: Callable[[], T]) -> T:
    """Build the app, or exit 2 with the reason when the executor's engine cannot work here."""
    from app.executor.engines import EngineUnavailable

    try:
        return build()
    except EngineUnavailable as exc:
        typer.echo(f"strata: {exc}", err=True)
        raise typer.Exit(2) from None


def _configure_logging(settings: Settings) -> None:
    from app.logs import configure_logging

    secrets = [pair.partition("=")[2] for pair in (settings.api_tokens or "").split(",")]
    configure_logging(settings.log_level, settings.log_format,
                      [*secrets, settings.executor_token or ""])


@cli.command()
def migrate(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the database migrations (works from any folder)."""
    from app.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@cli.command()
def openapi() -> None:
    """Print the API's OpenAPI document (what `openapi/openapi.json` holds)."""
    from app.main import create_app

    spec = create_app(Settings()).openapi()
    sys.stdout.write(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
