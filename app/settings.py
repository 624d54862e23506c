"""Configuration from `STRATA_*` environment variables and an optional `.env` file.

Only the app factories and the CLI read settings; everything else is handed its values.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EXECUTOR_DEFAULT_PORT = 8001
"""`strata executor`'s port when `STRATA_PORT` is not set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATA_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./data/strata.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///… or postgresql+asyncpg://…",
    )
    landing_dir: Path = Path("./data/landing")
    warehouse_dir: Path = Path("./data/warehouse")
    executor_url: str | None = Field(
        default=None, description="Base URL of the executor; unset means the embedded one."
    )
    executor_token: str | None = Field(
        default=None, description="Shared secret the watcher sends to the executor."
    )
    host: str = Field(default="127.0.0.1", description="Bind address of `serve` and `executor`.")
    port: int = Field(
        default=8000, ge=1, le=65535,
        description="Port of whichever command runs; unset, `strata executor` takes 8001.",
    )
    api_tokens: str | None = Field(
        default=None, description="Comma-separated owner=token pairs; unset means no auth."
    )
    admin_owners: str = Field(default="admin", description="Owners who see every job.")
    max_body_bytes: int = Field(default=1_048_576, description="Largest JSON request body.")
    max_upload_bytes: int = Field(default=10 * 1024**3, description="Largest landing upload.")
    retry_backoff_seconds: float = Field(
        default=2.0, ge=0, description="First wait before a failed stage is retried; doubles."
    )
    max_jobs_in_flight: int = Field(
        default=100, ge=1, description="Jobs one owner may have running or waiting; more → 429."
    )
    creates_per_minute: float = Field(
        default=600, gt=0, description="Jobs one owner may create per minute; more → 429."
    )
    log_format: str = Field(default="auto", description="json, text, or auto (json unless a TTY).")
    max_workers: int = Field(default=4, ge=1, description="Jobs advanced at once per watcher.")
    watch_interval: float = Field(default=1.0, gt=0, description="Seconds between watcher ticks.")
    task_create_rate: float = Field(
        default=200.0, gt=0,
        description="Executor tasks created per second at most (a flood guard, e.g. after a "
                    "recovery; 20 capped a busy service at 5 jobs/s).",
    )
    scheduler_interval: float = Field(
        default=1.0, gt=0, description="Seconds between the scheduler's passes over pipelines.")
    lease_seconds: float = Field(default=30.0, gt=0, description="How long a claim on a job lasts.")
    executor_workers: int = Field(default=2, ge=1, description="Stages run at once per executor.")
    executor_memory_limit: str | None = Field(
        default=None,
        description="DuckDB memory_limit per stage, e.g. '4GB'; unset: a share of the machine's "
                    "memory (see `stage_memory_limit`).",
    )
    min_free_disk: str = Field(
        default="5%",
        description="Free space the warehouse's filesystem keeps: bytes ('2GB', '500MB', "
                    "'1073741824') or a share of the disk ('5%'); a stage below it fails.",
    )
    engine: str = Field(default="duckdb", description="Executor engine: duckdb or spark.")
    spark_master: str = Field(
        default="local[2]", description="With engine=spark: local[n], spark://…, sc://…, yarn."
    )
    spark_conf: str = Field(
        default="", description="With engine=spark: extra Spark settings, 'key=value,…'."
    )
    log_level: str = "INFO"
    webhook_backoff_seconds: float = Field(
        default=5.0, gt=0, description="First wait before a failed webhook delivery is retried; "
                                       "doubles (with jitter) up to an hour.")
    webhook_retry_hours: float = Field(
        default=24.0, gt=0, description="How long a webhook delivery is retried before it fails.")
    webhook_allow_private: bool = Field(
        default=False, description="Let webhooks call loopback, link-local and private addresses "
                                   "with authentication on (always allowed without it).")
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook attempt waits for an answer.")
    webhook_max_in_flight: int = Field(
        default=16, ge=1, description="Webhook deliveries sent at once per process.")
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="Seconds between looks for due webhook deliveries.")

    def executor_port(self) -> int:
        """`STRATA_PORT` when it is set (environment, `.env` or a flag); otherwise 8001, so an
        executor and `strata serve` with default settings can share a machine."""
        return self.port if "port" in self.model_fields_set else EXECUTOR_DEFAULT_PORT

    def landing_path(self) -> Path:
        return self.landing_dir.resolve()

    def warehouse_path(self) -> Path:
        return self.warehouse_dir.resolve()
