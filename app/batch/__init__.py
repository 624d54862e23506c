"""The BatchManager client: how the watcher talks to an executor over HTTP."""

from app.batch.client import (
    BatchClient,
    BatchError,
    BatchStatus,
    BatchTask,
    ExecutorUnavailable,
    TaskNotFound,
    TaskRejected,
    UnexpectedResponse,
    make_http_client,
)

__all__ = [
    "BatchClient",
    "BatchError",
    "BatchStatus",
    "BatchTask",
    "ExecutorUnavailable",
    "TaskNotFound",
    "TaskRejected",
    "UnexpectedResponse",
    "make_http_client",
]
