"""When a pipeline's schedule fires: five-field cron in a named timezone, or a fixed interval.

Ticks are a pure function of the schedule, never of when a replica happened to look: a cron tick
is a wall-clock time in the schedule's timezone, an interval tick a multiple of the interval since
the Unix epoch. So every replica computes the same ticks, and the database's one-job-per-tick
constraint can tell them apart.

Daylight-saving changes follow Debian cron (through `cronsim`): a fixed-time tick in the hour that
is skipped fires once, at the first valid minute after the gap; a tick in the hour that is repeated
fires once, in its first occurrence. Every tick is returned in UTC, strictly increasing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ConcurrencyPolicy = Literal["Forbid", "Allow", "Replace"]
MAX_INTERVAL_SECONDS = 366 * 86400


class Schedule(BaseModel):
    """`cron` + `timezone`, or `interval_seconds`; what to do on overlap and after downtime."""

    model_config = ConfigDict(extra="forbid")

    cron: Annotated[str | None, Field(
        max_length=200, examples=["0 2 * * *"],
        description="Five fields: minute hour day month weekday.")] = None
    timezone: Annotated[str, Field(
        max_length=64, description="IANA name the cron is read in.")] = "UTC"
    interval_seconds: Annotated[int | None, Field(ge=1, le=MAX_INTERVAL_SECONDS)] = None
    concurrency_policy: ConcurrencyPolicy = Field(
        default="Forbid",
        description="A tick while a run is active: Forbid skips it, Allow runs both, Replace "
                    "cancels the active run first.")
    starting_deadline_seconds: Annotated[int | None, Field(
        ge=1, le=MAX_INTERVAL_SECONDS,
        description="A tick found later than this (no replica ran) is recorded missed, not run.",
    )] = None
    catchup: bool = Field(default=False,
                          description="Run every missed tick, oldest first (else only the latest).")
    suspend: bool = Field(default=False,
                          description="Create the pipeline with its schedule paused.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone_of(value)
        return value

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if len(value.split(" ")) != 5:
            raise ValueError("cron must have five fields: minute hour day month weekday")
        try:
            first = next(CronSim(value, datetime(2000, 1, 1)), None)
        except (CronSimError, ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"cron {value!r} is not valid: {exc}") from None
        if first is None:
            raise ValueError(f"cron {value!r} never fires")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and interval_seconds")
        return self

    def timing(self) -> tuple[str | None, str, int | None]:
        """What decides the ticks (a change of it moves the next fire time)."""
        return self.cron, self.timezone, self.interval_seconds


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}; use an IANA name like Europe/Berlin") from None


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def ticks_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Every tick strictly after `after`, in UTC, in order (an endless iterator)."""
    after = _utc(after)
    if schedule.interval_seconds is not None:
        step = schedule.interval_seconds
        n = math.floor(after.timestamp() / step) + 1
        while True:
            yield datetime.fromtimestamp(n * step, UTC)
            n += 1
    assert schedule.cron is not None
    zone = zone_of(schedule.timezone)
    last = after
    for local in CronSim(schedule.cron, after.astimezone(zone)):
        moment = _utc(local)
        if moment > last:  # wall-clock arithmetic near a DST change never repeats a tick
            last = moment
            yield moment


def next_tick(schedule: Schedule, after: datetime) -> datetime | None:
    """The first tick after `after`; None if there is none (cron gives up after 50 years)."""
    return next(ticks_after(schedule, after), None)


def ticks_between(schedule: Schedule, start: datetime, end: datetime,
                  limit: int | None = None) -> list[datetime]:
    """The ticks in [start, end] (at most `limit`, oldest first)."""
    out: list[datetime] = []
    end = _utc(end)
    for tick in ticks_after(schedule, _utc(start) - timedelta(microseconds=1)):
        if tick > end or (limit is not None and len(out) >= limit):
            break
        out.append(tick)
    return out


def run_date(moment: datetime, timezone: str) -> date:
    """The date of `moment` in the schedule's timezone (the `run_date` of a run)."""
    return _utc(moment).astimezone(zone_of(timezone)).date()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The first and last instant of `day` in `timezone`, in UTC."""
    zone = zone_of(timezone)
    start = datetime.combine(day, time.min, zone)
    end = datetime.combine(day + timedelta(days=1), time.min, zone) - timedelta(microseconds=1)
    return _utc(start), _utc(end)
