"""Errors the domain raises; the API maps each to one problem+json response in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose (not the API client's `StrataError`)."""


class JobNotFound(DomainError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class IllegalAction(DomainError):
    """An action the job's machine refuses in its current state."""

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a job in state {status}")
        self.action = action
        self.status = status


class IdempotencyConflict(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different body")
        self.key = key


class ConcurrentUpdate(DomainError):
    """The job changed between read and write; the caller may reload and try again."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was changed concurrently; try again")
        self.job_id = job_id


class LandingPathRefused(DomainError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"landing path {path!r} refused: {reason}")
        self.path = path
        self.reason = reason


class LandingPathTaken(LandingPathRefused):
    """The path is free of rules but not of things: a folder where the file would go, or a file
    where a folder would."""


class OutputNotReady(DomainError):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} has no output: it is {status}, not Succeeded")
        self.job_id = job_id
        self.status = status


class LayerNotWritten(DomainError):
    """A layer (or its rejects) that the job has not written (yet)."""

    def __init__(self, job_id: str, layer: str, status: str, what: str = "layer") -> None:
        super().__init__(f"job {job_id} has not written {what} {layer}: the job is {status}")
        self.job_id = job_id
        self.layer = layer
        self.status = status


class TooManyRequests(DomainError):
    """An owner's limit is reached; `retry_after` says when trying again makes sense."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
