"""Prometheus metrics, all prefixed `strata_`, in one registry per app.

A registry per app (not the global default) keeps several apps in one process — tests, the
embedded executor — from colliding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_by_status = Gauge("strata_jobs", "Jobs by status.", ["status"], registry=r)
        self.transitions = Counter("strata_job_transitions", "Job state transitions.",
                                   ["event", "from_status", "to_status"], registry=r)
        self.stage_seconds = Histogram("strata_stage_duration_seconds",
                                       "Wall time of a completed stage, task creation to done.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.tasks_created = Counter("strata_tasks_created", "Executor tasks created.", ["stage"],
                                     registry=r)
        self.task_create_errors = Counter("strata_task_create_errors",
                                          "Failed attempts to create an executor task.",
                                          ["reason"], registry=r)
        self.task_poll_errors = Counter("strata_task_poll_errors",
                                        "Failed polls of an executor task.", ["reason"],
                                        registry=r)
        self.tick_seconds = Histogram("strata_watcher_tick_duration_seconds",
                                      "Duration of one watcher tick.", buckets=TICK_BUCKETS,
                                      registry=r)
        self.tick_lag = Gauge("strata_watcher_lag_seconds",
                              "Age of the oldest runnable job's last change at the last tick.",
                              registry=r)
        self.jobs_claimed = Counter("strata_watcher_jobs_claimed",
                                    "Jobs claimed by the watcher.", registry=r)
        self.executor_queue_depth = Gauge("strata_executor_queue_depth",
                                          "Executor tasks waiting for a worker.", registry=r)
        self.executor_running = Gauge("strata_executor_running_tasks",
                                      "Executor tasks running now.", registry=r)
        self.rows_processed = Counter("strata_executor_rows_processed",
                                      "Rows written by completed stages.", ["layer"], registry=r)
        self.webhook_deliveries_sent = Counter("strata_webhook_deliveries_sent",
                                               "Webhook deliveries a receiver accepted (2xx).",
                                               registry=r)
        self.webhook_deliveries_failed = Counter("strata_webhook_deliveries_failed",
                                                 "Webhook deliveries given up (retry window "
                                                 "passed, or the URL was refused).", registry=r)
        self.webhook_attempt_errors = Counter("strata_webhook_attempt_errors",
                                              "Webhook attempts that failed and will be retried.",
                                              registry=r)
        self.webhook_deliveries_pending = Gauge("strata_webhook_deliveries_pending",
                                                "Webhook deliveries not yet delivered or given up.",
                                                registry=r)
        self.webhook_oldest_pending_seconds = Gauge(
            "strata_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery (0 when none).", registry=r)

    def count_transitions(self, events: Iterable[_Transition]) -> None:
        for event in events:
            self.transitions.labels(event.event, event.from_status or "", event.to_status).inc()


class _Transition(Protocol):
    event: str
    from_status: str | None
    to_status: str
