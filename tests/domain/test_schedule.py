"""Schedule ticks: cron in a named timezone (daylight saving included) and fixed intervals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.domain.schedule import Schedule, next_tick, run_date, ticks_between


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


BERLIN_NIGHTLY = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")


def test_a_tick_in_the_skipped_hour_fires_once_right_after_the_gap() -> None:
    # 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist
    ticks = ticks_between(BERLIN_NIGHTLY, utc(2026, 3, 28), utc(2026, 3, 30, 12))
    assert ticks == [utc(2026, 3, 28, 1, 30),   # 02:30 CET
                     utc(2026, 3, 29, 1, 0),    # 03:00 CEST, the first minute after the gap
                     utc(2026, 3, 30, 0, 30)]   # 02:30 CEST


def test_a_tick_in_the_repeated_hour_fires_once_in_its_first_occurrence() -> None:
    # 2026-10-25: Berlin clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice
    ticks = ticks_between(BERLIN_NIGHTLY, utc(2026, 10, 24), utc(2026, 10, 26, 12))
    assert ticks == [utc(2026, 10, 24, 0, 30),  # 02:30 CEST
                     utc(2026, 10, 25, 0, 30),  # 02:30 CEST, not again at 02:30 CET
                     utc(2026, 10, 26, 1, 30)]  # 02:30 CET


def test_ticks_are_strictly_after_the_given_time() -> None:
    assert next_tick(BERLIN_NIGHTLY, utc(2026, 1, 5, 1, 30)) == utc(2026, 1, 6, 1, 30)
    assert next_tick(BERLIN_NIGHTLY, utc(2026, 1, 5, 1, 29, 59)) == utc(2026, 1, 5, 1, 30)


def test_interval_ticks_are_multiples_of_the_interval_so_every_replica_agrees() -> None:
    every_30s = Schedule(interval_seconds=30)
    assert next_tick(every_30s, utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 30)
    assert next_tick(every_30s, utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1, 0)
    assert ticks_between(every_30s, utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)) == [
        utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1)]


def test_run_date_is_the_date_in_the_schedules_timezone() -> None:
    assert run_date(utc(2026, 1, 5, 23, 30), "Europe/Berlin").isoformat() == "2026-01-06"
    assert run_date(utc(2026, 1, 5, 23, 30), "UTC").isoformat() == "2026-01-05"


@pytest.mark.parametrize(("body", "message"), [
    ({"cron": "0 2 * *"}, "five fields"),
    ({"cron": "0 2 * * * *"}, "five fields"),
    ({"cron": "61 2 * * *"}, "not valid"),
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"cron": "0 2 * * *", "interval_seconds": 60}, "exactly one"),
    ({}, "exactly one"),
    ({"interval_seconds": 0}, "greater than or equal to 1"),
    ({"interval_seconds": 60, "concurrency_policy": "Sometimes"}, "Forbid"),
])
def test_a_bad_schedule_is_refused_saying_why(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule.model_validate(body)
