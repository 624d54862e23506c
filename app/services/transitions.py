"""Advance a job in one transaction: restore its machine, send the event, write status,
conditions and an event row per transition, guarded by the job's version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from statemachine.exceptions import TransitionNotAllowed

from app.domain.errors import ConcurrentUpdate, IllegalAction, JobNotFound
from app.domain.fsm import Transition, restore
from app.services import inputs
from app.store import jobs as store
from app.store.db import transaction
from app.store.models import Job, JobEvent


@dataclass
class _Snapshot:
    """What the machine reads and writes of a job: its status and suspend flag."""

    status: str
    suspend: bool


@cache
def _outcome(status: str, suspend: bool, event: str) -> tuple[str, tuple[Transition, ...]] | None:
    """What the machine does with `event` in (status, suspend): the state it ends in and the
    transitions it took; None when it refuses. Asked once per combination: building a machine
    costs most of a millisecond, and the watcher fires an event at every hop."""
    snapshot = _Snapshot(status, suspend)
    machine = restore(snapshot)
    try:
        machine.send(event)
    except TransitionNotAllowed:
        return None
    return snapshot.status, tuple(machine.transitions)


def fire(job: Job, event: str, now: datetime, message: str = "", **kwargs: Any) -> list[JobEvent]:
    """Send `event` to the job's machine; return the event rows to store with the change.

    Raises IllegalAction (naming the state) when the machine refuses the event. An event without
    arguments depends only on the status and the suspend flag, so its outcome is remembered.
    """
    if kwargs:
        machine = restore(job)
        try:
            machine.send(event, **kwargs)
        except TransitionNotAllowed as exc:
            raise IllegalAction(event, job.status) from exc
        transitions: tuple[Transition, ...] = tuple(machine.transitions)
    else:
        outcome = _outcome(str(job.status), bool(job.suspend), event)
        if outcome is None:
            raise IllegalAction(event, job.status)
        job.status, transitions = outcome
    job.updated_at = now
    return [
        JobEvent(job_id=job.id, event=t.event, from_status=t.source, to_status=t.target,
                 attempt=job.attempt, message=message[:4000], at=now)
        for t in transitions
    ]


async def save(session: AsyncSession, job: Job, events: list[JobEvent]) -> Job:
    """Write the detached `job` (version-guarded) and its event rows in this transaction."""
    hooks = await store.save_job(session, job, job.version)
    if events:
        await store.add_events(session, events, hooks=hooks)
        await inputs.on_transition(session, job, events)
    return job


Change = Callable[[Job], list[JobEvent]]


async def change_job(
    sessions: async_sessionmaker[AsyncSession],
    job_id: str,
    change: Change,
    *,
    owner: str | None = None,
    attempts: int = 5,
    on_saved: Callable[[list[JobEvent]], None] | None = None,
) -> Job:
    """Load the job, apply `change` to a detached copy, save it and its events atomically.

    A concurrent writer (the watcher recording progress, say) makes the version check fail; the
    change is then applied again to the fresh row, so a user's action never loses to a progress
    update, and the machine judges it against the state the job really is in.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with transaction(sessions) as session:
                job = await store.get_job(session, job_id, owner)
                if job is None:
                    raise JobNotFound(job_id)
                session.expunge(job)
                events = change(job)
                saved = await save(session, job, events)
            if on_saved is not None:
                on_saved(events)
            return saved
        except ConcurrentUpdate:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
