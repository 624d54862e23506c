"""`fire` remembers what the machine does with an event without arguments; what it remembers is
what the machine decides, for every state, suspend flag and event."""

from __future__ import annotations

from itertools import product

import pytest
from statemachine.exceptions import TransitionNotAllowed

from app.domain.errors import IllegalAction
from app.domain.fsm import JobMachine, restore, state_names
from app.services.transitions import fire
from app.store.models import Job
from app.store.types import utcnow

EVENTS = sorted({str(event.id) for event in JobMachine.events})


def a_job(status: str, suspend: bool) -> Job:
    return Job(id="j", name="j", owner="local", status=status, suspend=suspend, params={},
               results={}, conditions=[], attempt=2)


@pytest.mark.parametrize(("status", "suspend"), list(product(state_names(), [False, True])))
def test_every_event_ends_where_the_machine_takes_it(status: str, suspend: bool) -> None:
    now = utcnow()
    for event in EVENTS:
        machine_job, fired_job = a_job(status, suspend), a_job(status, suspend)
        machine = restore(machine_job)
        try:
            machine.send(event)
        except TransitionNotAllowed:
            with pytest.raises(IllegalAction):
                fire(fired_job, event, now)
            assert fired_job.status == status
            continue
        rows = fire(fired_job, event, now, message="m")
        assert fired_job.status == machine_job.status, (status, suspend, event)
        assert [(r.event, r.from_status, r.to_status) for r in rows] == [
            (t.event, t.source, t.target) for t in machine.transitions]
        assert all(r.attempt == 2 and r.message == "m" and r.at == now for r in rows)
        assert fired_job.updated_at == now


def test_an_event_with_arguments_still_asks_the_machine() -> None:
    job = a_job("Failed", False)
    [row] = fire(job, "retry", utcnow(), resume_at="ODSToDWD")
    assert job.status == "ODSToDWD" and (row.from_status, row.to_status) == ("Failed", "ODSToDWD")
