"""The BatchManager: how the watcher talks to an executor (the port, its HTTP client, a fake)."""

from app.batch.client import (
    BatchClient,
    BatchError,
    ExecutorUnavailable,
    TaskNotFound,
    TaskRejected,
    UnexpectedResponse,
    make_http_client,
)
from app.batch.manager import BatchManager

__all__ = [
    "BatchClient",
    "BatchError",
    "BatchManager",
    "ExecutorUnavailable",
    "TaskNotFound",
    "TaskRejected",
    "UnexpectedResponse",
    "make_http_client",
]
