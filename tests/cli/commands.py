"""Job specs for the CLI tests and a way to run the `strata` command in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from app.cli import cli
from tests.orders_data import EXAMPLES

ORDERS_JOB = EXAMPLES / "orders_job.json"


def orders_spec(**params: Any) -> dict[str, Any]:
    """The product's sample job, with some params replaced."""
    spec: dict[str, Any] = json.loads(ORDERS_JOB.read_text())
    spec["params"].update(params)
    return spec


def failing_spec() -> dict[str, Any]:
    """A job whose first stage fails at once: its source glob matches nothing, no retries."""
    return orders_spec(source={"path": "nothing/*.csv", "format": "csv"}, retries=0)


async def strata(*args: str | Path, env: dict[str, str | None] | None = None,
                 input: str | None = None) -> Result:
    """Run `strata ARGS…` in a thread, so the service in this event loop keeps serving.

    STRATA_URL and STRATA_TOKEN from the developer's shell are cleared unless `env` sets them.
    """
    argv: Sequence[str] = [str(a) for a in args]
    environment: dict[str, str | None] = {"STRATA_URL": None, "STRATA_TOKEN": None, **(env or {})}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, argv, input=input, env=environment,
                                   catch_exceptions=False)
