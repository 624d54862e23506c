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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statemachine import State, StateMachine

from app.domain.states import JobStatus


@dataclass(frozen=True)
class Transition:
    event: str
    source: str
    target: str


def _resumes_at(status: JobStatus) -> Callable[..., bool]:
    def cond(resume_at: str | None = None) -> bool:
        return resume_at == status.value

    cond.__name__ = f"resumes_at_{status.value}"
    return cond


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
    retry_stage = (
        LandingToODS.to.itself(internal=True)
        | ODSToDWD.to.itself(internal=True)
        | DWDToDWS.to.itself(internal=True)
        | DWSToDS.to.itself(internal=True)
    )
    fail = (
        Pending.to(Failed)
        | LandingToODS.to(Failed)
        | ODSToDWD.to(Failed)
        | DWDToDWS.to(Failed)
        | DWSToDS.to(Failed)
        | Completed.to(Failed)
    )
    cancel = (
        Pending.to(Cancelled)
        | LandingToODS.to(Cancelled)
        | ODSToDWD.to(Cancelled)
        | DWDToDWS.to(Cancelled)
        | DWSToDS.to(Cancelled)
        | Completed.to(Cancelled)
    )
    suspend = (
        Pending.to.itself(internal=True, cond="is_running")
        | LandingToODS.to.itself(internal=True, cond="is_running")
        | ODSToDWD.to.itself(internal=True, cond="is_running")
        | DWDToDWS.to.itself(internal=True, cond="is_running")
        | DWSToDS.to.itself(internal=True, cond="is_running")
        | Completed.to.itself(internal=True, cond="is_running")
    )
    resume = (
        Pending.to.itself(internal=True, cond="is_suspended")
        | LandingToODS.to.itself(internal=True, cond="is_suspended")
        | ODSToDWD.to.itself(internal=True, cond="is_suspended")
        | DWDToDWS.to.itself(internal=True, cond="is_suspended")
        | DWSToDS.to.itself(internal=True, cond="is_suspended")
        | Completed.to.itself(internal=True, cond="is_suspended")
    )
    retry = (
        Failed.to(Pending, cond=_resumes_at(JobStatus.PENDING))
        | Failed.to(LandingToODS, cond=_resumes_at(JobStatus.LANDING_TO_ODS))
        | Failed.to(ODSToDWD, cond=_resumes_at(JobStatus.ODS_TO_DWD))
        | Failed.to(DWDToDWS, cond=_resumes_at(JobStatus.DWD_TO_DWS))
        | Failed.to(DWSToDS, cond=_resumes_at(JobStatus.DWS_TO_DS))
        | Failed.to(Completed, cond=_resumes_at(JobStatus.COMPLETED))
        | Cancelled.to(Pending, cond=_resumes_at(JobStatus.PENDING))
        | Cancelled.to(LandingToODS, cond=_resumes_at(JobStatus.LANDING_TO_ODS))
        | Cancelled.to(ODSToDWD, cond=_resumes_at(JobStatus.ODS_TO_DWD))
        | Cancelled.to(DWDToDWS, cond=_resumes_at(JobStatus.DWD_TO_DWS))
        | Cancelled.to(DWSToDS, cond=_resumes_at(JobStatus.DWS_TO_DS))
        | Cancelled.to(Completed, cond=_resumes_at(JobStatus.COMPLETED))
    )

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self.transitions: list[Transition] = []
        super().__init__(model=model, state_field="status", **kwargs)

    def is_running(self) -> bool:
        return not bool(getattr(self.model, "suspend", False))

    def is_suspended(self) -> bool:
        return bool(getattr(self.model, "suspend", False))

    def after_transition(self, event: str, source: State, target: State) -> None:
        name = str(getattr(event, "id", event))
        self.transitions.append(Transition(name, str(source.value), str(target.value)))


def restore(job: Any) -> JobMachine:
    """The machine of a stored job, in the job's stored state (no callbacks run)."""
    return JobMachine(job)


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
