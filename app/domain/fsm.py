"""The job state machine: the only place that decides which transition is legal.

A job moves Pending → LandingToODS → ODSToDWD → DWDToDWS → DWSToDS → Completed → Succeeded, one
durable stage at a time. Any state that is not an end state can fail or be cancelled; a Failed or
Cancelled job can be retried, and resumes at the stage that did not finish (`resume_at`), keeping
the layers it already wrote. Suspend and resume are internal transitions of the running states, so
their legality lives here too, and a failed stage attempt that will be retried is the internal
`retry_stage` transition.

The machine is bound to the job row (`model=job, state_field="status"`) and restored from the
stored status every time; restoring runs no callbacks. It performs no I/O: the caller persists the
status and the recorded transitions in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from statemachine import State, StateMachine
from statemachine.transition_list import TransitionList

from app.domain.states import JobStatus


@dataclass(frozen=True)
class Transition:
    event: str
    source: str
    target: str


def _each_to_itself(*states: State, **kwargs: Any) -> TransitionList:
    """One internal self-transition per state, all sharing one event (suspend, retry_stage…)."""
    transitions = TransitionList()
    for state in states:
        transitions.add_transitions(state.to.itself(internal=True, **kwargs))
    return transitions


class JobMachine(StateMachine):
    """A data-layer job, from Pending to Succeeded."""

    Pending = State("Pending", initial=True, value=JobStatus.PENDING.value)
    LandingToODS = State("LandingToODS", value=JobStatus.LANDING_TO_ODS.value)
    ODSToDWD = State("ODSToDWD", value=JobStatus.ODS_TO_DWD.value)
    DWDToDWS = State("DWDToDWS", value=JobStatus.DWD_TO_DWS.value)
    DWSToDS = State("DWSToDS", value=JobStatus.DWS_TO_DS.value)
    Completed = State("Completed", value=JobStatus.COMPLETED.value)
    Succeeded = State("Succeeded", final=True, value=JobStatus.SUCCEEDED.value)
    Failed = State("Failed", value=JobStatus.FAILED.value)
    Cancelled = State("Cancelled", value=JobStatus.CANCELLED.value)

    start = Pending.to(LandingToODS)
    stage_done = (
        LandingToODS.to(ODSToDWD)
        | ODSToDWD.to(DWDToDWS)
        | DWDToDWS.to(DWSToDS)
        | DWSToDS.to(Completed)
    )
    succeed = Completed.to(Succeeded)
    retry_stage = _each_to_itself(LandingToODS, ODSToDWD, DWDToDWS, DWSToDS)
    fail = Failed.from_(Pending, LandingToODS, ODSToDWD, DWDToDWS, DWSToDS, Completed)
    cancel = Cancelled.from_(Pending, LandingToODS, ODSToDWD, DWDToDWS, DWSToDS, Completed)
    suspend = _each_to_itself(Pending, LandingToODS, ODSToDWD, DWDToDWS, DWSToDS, Completed,
                              cond="is_running")
    resume = _each_to_itself(Pending, LandingToODS, ODSToDWD, DWDToDWS, DWSToDS, Completed,
                             cond="is_suspended")
    retry = (
        Pending.from_(Failed, Cancelled, cond="resumes_at_target")
        | LandingToODS.from_(Failed, Cancelled, cond="resumes_at_target")
        | ODSToDWD.from_(Failed, Cancelled, cond="resumes_at_target")
        | DWDToDWS.from_(Failed, Cancelled, cond="resumes_at_target")
        | DWSToDS.from_(Failed, Cancelled, cond="resumes_at_target")
        | Completed.from_(Failed, Cancelled, cond="resumes_at_target")
    )

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self.transitions: list[Transition] = []
        super().__init__(model=model, state_field="status", **kwargs)

    def is_running(self) -> bool:
        return not bool(getattr(self.model, "suspend", False))

    def is_suspended(self) -> bool:
        return bool(getattr(self.model, "suspend", False))

    def resumes_at_target(self, target: State, resume_at: str | None = None) -> bool:
        """A retry goes to exactly one state: the one the caller computed (`resume_at`)."""
        return resume_at == target.value

    def after_transition(self, event: str, source: State, target: State) -> None:
        name = str(getattr(event, "id", event))
        self.transitions.append(Transition(name, str(source.value), str(target.value)))


def restore(job: Any) -> JobMachine:
    """The machine of a stored job, in the job's stored state (no callbacks run)."""
    return JobMachine(job)


ACTIONS = ("cancel", "suspend", "resume", "retry")
"""The events a client may send (`POST /v1/jobs/{id}/{action}`), in the order a page shows them."""


@dataclass(frozen=True)
class _Snapshot:
    """What the machine's guards read from a job: its status and suspend flag."""

    status: str
    suspend: bool


@cache
def allowed_actions(status: str, suspend: bool) -> tuple[str, ...]:
    """The client actions the machine accepts now, for a job in `status` with `suspend`.

    Suspend and resume are decided by their guards; retry's guard only picks the state it
    resumes at, so retry is allowed wherever the machine has a retry transition (Failed,
    Cancelled). There are few (status, suspend) pairs, so each is asked once.
    """
    machine = JobMachine(_Snapshot(status, suspend))
    enabled = {event.id for event in machine.enabled_events()}
    declared = {event.id for event in machine.allowed_events}
    return tuple(a for a in ACTIONS if a in enabled or (a == "retry" and a in declared))


def transitions() -> list[Transition]:
    """Every transition the machine declares, as data (event, source, target), in class order."""
    seen: list[Transition] = []
    for state in JobMachine.states:
        for transition in state.transitions:
            for event in transition.events:
                edge = Transition(str(event), str(transition.source.value),
                                  str(transition.target.value))
                if edge not in seen:
                    seen.append(edge)
    return seen


def state_names() -> list[str]:
    """The machine's states, in declaration order."""
    return [str(state.value) for state in JobMachine.states]


def initial_state() -> str:
    return str(JobMachine.initial_state.value)


def diagram(current: str | None = None) -> str:
    """The machine as a mermaid state diagram, optionally with `current` highlighted."""

    class _Row:
        status = current or JobStatus.PENDING.value
        suspend = False

    text = f"{JobMachine(_Row()):mermaid}"
    if current is None:
        text = "\n".join(
            line for line in text.splitlines() if ":::active" not in line and "classDef" not in line
        ).rstrip() + "\n"
    return text
