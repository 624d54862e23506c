"""Job statuses and the stage each one runs, named exactly as in the original watcher."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "Pending"
    LANDING_TO_ODS = "LandingToODS"
    ODS_TO_DWD = "ODSToDWD"
    DWD_TO_DWS = "DWDToDWS"
    DWS_TO_DS = "DWSToDS"
    COMPLETED = "Completed"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class Stage(StrEnum):
    """A stage is a status in which a transform is in progress."""

    LANDING_TO_ODS = "LandingToODS"
    ODS_TO_DWD = "ODSToDWD"
    DWD_TO_DWS = "DWDToDWS"
    DWS_TO_DS = "DWSToDS"

    @property
    def layer(self) -> str:
        """The layer this stage writes."""
        return _OUTPUT_LAYER[self]

    @property
    def input_layer(self) -> str:
        """The name the stage's SQL reads its input under."""
        return _INPUT_LAYER[self]


LAYERS = ("ods", "dwd", "dws", "ds")
STAGES = tuple(Stage)
_OUTPUT_LAYER = dict(zip(STAGES, LAYERS, strict=True))
_INPUT_LAYER = dict(zip(STAGES, ("landing", "ods", "dwd", "dws"), strict=True))

STAGE_STATUSES = frozenset(JobStatus(s.value) for s in STAGES)
STOPPED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
RUNNABLE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.COMPLETED} | STAGE_STATUSES)


def stage_of(status: str) -> Stage | None:
    """The stage a status runs, or None for Pending, Completed and the end states."""
    try:
        return Stage(status)
    except ValueError:
        return None
