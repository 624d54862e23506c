"""The job machine, as a table: from state, event (and context) → the state it must end in.

Every (state, event) pair not in the table must be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import pytest
from statemachine.exceptions import TransitionNotAllowed

from app.domain.fsm import ACTIONS, JobMachine, allowed_actions, diagram, restore, transitions
from app.domain.states import JobStatus as S

STAGE_STATES = [S.LANDING_TO_ODS, S.ODS_TO_DWD, S.DWD_TO_DWS, S.DWS_TO_DS]
ACTIVE = [S.PENDING, *STAGE_STATES, S.COMPLETED]
EVENTS = ["start", "stage_done", "succeed", "retry_stage", "fail", "cancel", "suspend", "resume",
          "retry"]


@dataclass
class Row:
    status: str
    suspend: bool = False


LEGAL: dict[tuple[S, str], S] = {
    (S.PENDING, "start"): S.LANDING_TO_ODS,
    (S.LANDING_TO_ODS, "stage_done"): S.ODS_TO_DWD,
    (S.ODS_TO_DWD, "stage_done"): S.DWD_TO_DWS,
    (S.DWD_TO_DWS, "stage_done"): S.DWS_TO_DS,
    (S.DWS_TO_DS, "stage_done"): S.COMPLETED,
    (S.COMPLETED, "succeed"): S.SUCCEEDED,
    **{(s, "retry_stage"): s for s in STAGE_STATES},
    **{(s, "fail"): S.FAILED for s in ACTIVE},
    **{(s, "cancel"): S.CANCELLED for s in ACTIVE},
    **{(s, "suspend"): s for s in ACTIVE},
}


@pytest.mark.parametrize(("source", "event"), sorted(LEGAL))
def test_legal_transition_reaches_its_target(source: S, event: str) -> None:
    row = Row(source.value)
    machine = restore(row)
    machine.send(event)
    assert row.status == LEGAL[(source, event)].value
    assert [(t.event, t.source, t.target) for t in machine.transitions] == [
        (event, source.value, LEGAL[(source, event)].value)
    ]


ILLEGAL = [
    (s, e) for s, e in product(list(S), EVENTS)
    if (s, e) not in LEGAL and e not in ("retry", "resume")
]


@pytest.mark.parametrize(("source", "event"), ILLEGAL)
def test_every_other_transition_is_refused(source: S, event: str) -> None:
    row = Row(source.value)
    with pytest.raises(TransitionNotAllowed):
        restore(row).send(event)
    assert row.status == source.value


@pytest.mark.parametrize("source", [S.FAILED, S.CANCELLED])
@pytest.mark.parametrize("resume_at", [S.PENDING, *STAGE_STATES, S.COMPLETED])
def test_retry_resumes_at_the_stage_that_did_not_finish(source: S, resume_at: S) -> None:
    row = Row(source.value)
    restore(row).send("retry", resume_at=resume_at.value)
    assert row.status == resume_at.value


@pytest.mark.parametrize("source", [S.FAILED, S.CANCELLED])
def test_retry_without_a_resume_point_is_refused(source: S) -> None:
    with pytest.raises(TransitionNotAllowed):
        restore(Row(source.value)).send("retry")


@pytest.mark.parametrize("source", [s for s in S if s not in (S.FAILED, S.CANCELLED)])
def test_only_failed_or_cancelled_jobs_can_be_retried(source: S) -> None:
    with pytest.raises(TransitionNotAllowed):
        restore(Row(source.value)).send("retry", resume_at=S.LANDING_TO_ODS.value)


@pytest.mark.parametrize("source", ACTIVE)
def test_suspend_and_resume_are_guarded_by_the_suspend_flag(source: S) -> None:
    running, suspended = Row(source.value), Row(source.value, suspend=True)
    with pytest.raises(TransitionNotAllowed):
        restore(running).send("resume")
    with pytest.raises(TransitionNotAllowed):
        restore(suspended).send("suspend")
    restore(suspended).send("resume")
    assert suspended.status == source.value


@pytest.mark.parametrize("source", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_stopped_jobs_cannot_be_suspended_or_resumed(source: S) -> None:
    for event, flag in (("suspend", False), ("resume", True)):
        with pytest.raises(TransitionNotAllowed):
            restore(Row(source.value, suspend=flag)).send(event)


def test_a_job_walks_the_whole_happy_path() -> None:
    row = Row(S.PENDING.value)
    seen = [row.status]
    for event in ["start", "stage_done", "stage_done", "stage_done", "stage_done", "succeed"]:
        restore(row).send(event)  # restored from the stored status every step, like the watcher
        seen.append(row.status)
    assert seen == ["Pending", "LandingToODS", "ODSToDWD", "DWDToDWS", "DWSToDS", "Completed",
                    "Succeeded"]


def test_restoring_runs_no_callbacks() -> None:
    machine = JobMachine(Row(S.DWD_TO_DWS.value))
    assert machine.transitions == []


def test_diagram_is_mermaid_and_names_every_state() -> None:
    text = diagram()
    assert text.startswith("stateDiagram-v2")
    for state in S:
        assert state.value in text
    assert ":::active" not in text
    assert "DWDToDWS:::active" in diagram(S.DWD_TO_DWS.value)


@pytest.mark.parametrize(("source", "suspend"), list(product(list(S), [False, True])))
def test_allowed_actions_are_exactly_the_actions_the_machine_accepts(source: S,
                                                                     suspend: bool) -> None:
    accepted = []
    for action in ACTIONS:
        context = {"resume_at": S.PENDING.value} if action == "retry" else {}
        try:
            restore(Row(source.value, suspend)).send(action, **context)
        except TransitionNotAllowed:
            continue
        accepted.append(action)
    assert list(allowed_actions(source.value, suspend)) == accepted


def test_the_transitions_as_data_are_the_machines() -> None:
    served = {(t.source, t.event): t.target for t in transitions() if t.event != "retry"}
    expected = {(s.value, e): target.value for (s, e), target in LEGAL.items()}
    expected.update({(s.value, "resume"): s.value for s in ACTIVE})
    assert served == expected
    retries = {(t.source, t.target) for t in transitions() if t.event == "retry"}
    assert retries == {(s.value, t.value) for s in (S.FAILED, S.CANCELLED)
                       for t in [S.PENDING, *STAGE_STATES, S.COMPLETED]}
