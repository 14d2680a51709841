"""One settings object, read at the edge (CLI, worker start) and passed down.

Values come from ``RETOUCH_*`` environment variables, then a settings file
(``RETOUCH_SETTINGS_FILE``, default ``retouch.env`` in the working directory),
then the defaults below. No module below the edge reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import RetouchError, one_line
from worker.models.store import default_model_dir


class SettingsError(RetouchError):
    """Settings (environment, settings file, flags) that do not validate."""


def default_state_dir() -> str:
    return str(Path.home() / ".cache" / "retouch" / "cluster")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RETOUCH_", env_file=os.environ.get("RETOUCH_SETTINGS_FILE", "retouch.env"),
        env_file_encoding="utf-8", extra="ignore",
    )

    model_dir: str = Field(default_factory=default_model_dir, description="model store directory")
    max_pixels: int = Field(100_000_000, description="refuse images with more pixels (decompression bombs)")
    device: str = Field("auto", description="auto | cpu | cuda:N")

    # --- cluster: broker, result backend, storage (see docs/cluster.md) ---
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker and job state (Redis)")
    result_backend: str | None = Field(None, description="Celery result backend (default: redis_url)")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333 "
                                                          "(default: AWS)")
    s3_region: str = Field("us-east-1", description="S3 region name")
    s3_access_key_id: SecretStr | None = Field(
        None, validation_alias=AliasChoices("RETOUCH_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "s3_access_key_id"),
        description="S3 access key (also read from AWS_ACCESS_KEY_ID); never logged")
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("RETOUCH_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
                                            "s3_secret_access_key"),
        description="S3 secret key (also read from AWS_SECRET_ACCESS_KEY); never logged")
    s3_addressing_style: str = Field("path", description="path | virtual | auto (path suits most self-hosted S3)")
    s3_max_attempts: int = Field(8, description="botocore attempts per request (standard retry mode, backoff)")
    multipart_threshold_mb: int = Field(16, description="objects from this size up go as multipart uploads")
    visibility_timeout: int = Field(7200, description="seconds before an unacknowledged task is redelivered; "
                                                      "must exceed task_time_limit")
    unacked_restore_interval: int = Field(10, description="seconds between sweeps restoring unacknowledged tasks")
    task_soft_time_limit: int = Field(1800, description="seconds before a task is asked to stop (fails its image); "
                                                        "0: none")
    task_time_limit: int = Field(2100, description="seconds before a task's worker is killed")
    max_deliveries: int = Field(3, description="times a task's worker may die holding it (its message put back) before its image fails")
    task_max_retries: int = Field(5, description="retries of a task on transient storage/broker errors")
    redis_outage_seconds: int = Field(60, description="seconds a worker keeps retrying a Redis command (bookkeeping, "
                                                      "next task, acknowledgement) while Redis restarts; 0: no retry")
    readahead_max_bytes: int = Field(64 * 2**20, description="a worker fetches the next queued image's input "
                                     "while it computes this one, up to this size (bytes); 0: off")
    batch_size: int = Field(100, description="images per chord batch when submitting a job")
    beat_lock_timeout: int = Field(30, description="seconds a standby `retouch beat` waits after the active one "
                                                   "dies before it takes over the schedule (redbeat's lock)")
    gpu_queues: int = Field(0, description="gpu.<i> queues to spread heavy stages over when no worker announced "
                                           "(0: everything on the cpu queue)")
    simulate_gpus: bool = Field(False, description="`retouch worker --gpus` runs the per-GPU workers on the CPU "
                                                   "(tests, machines without CUDA)")
    cpu_concurrency: int = Field(1, description="processes serving the cpu queue")
    threads: int = Field(0, ge=0, description="threads per worker process for onnxruntime, torch, OpenCV, ncnn "
                                              "and BLAS (0: the usable cores, cgroup quota and affinity, divided "
                                              "by the worker processes)")
    state_dir: str = Field(default_factory=default_state_dir,
                           description="`retouch cluster` pid files, logs and data")
    metrics_dir: str | None = Field(None, description="prometheus_client multiprocess directory of `retouch worker "
                                                       "--metrics-port` (default <state_dir>/metrics-<port>; "
                                                       "wiped at worker start)")

    # --- HTTP API: `retouch serve` (see docs/api.md) ---
    api_token: SecretStr | None = Field(None, description="bearer token the HTTP API requires on /v1/*; without one "
                                                          "it answers loopback clients only; never logged")
    api_max_body_mb: float = Field(64.0, description="largest request body the HTTP API reads, in MiB (413 above)")
    api_request_timeout: float = Field(300.0, description="seconds a synchronous request may wait and compute "
                                                          "(503 while waiting, 504 past it)")
    api_concurrency: int = Field(1, description="images the HTTP API's synchronous endpoints process at once")
    api_gpu_queues: int | None = Field(None, description="gpu.<i> queues that jobs submitted over HTTP route heavy "
                                                         "stages to (default: the queues running workers announce; "
                                                         "set it where GPU workers scale to zero)")
    api_idempotency_ttl: int = Field(86400, description="seconds an Idempotency-Key of POST /v1/jobs is remembered")

    @model_validator(mode="after")
    def _limits(self) -> "Settings":
        if self.task_time_limit <= 0 or self.task_soft_time_limit < 0:
            raise ValueError(f"time limits must be positive but are soft {self.task_soft_time_limit}s, "
                             f"hard {self.task_time_limit}s")
        if self.api_max_body_mb <= 0 or self.api_request_timeout <= 0 or self.api_concurrency < 1:
            raise ValueError(f"API limits must be positive but are api_max_body_mb {self.api_max_body_mb}, "
                             f"api_request_timeout {self.api_request_timeout}s, "
                             f"api_concurrency {self.api_concurrency}")
        if self.task_soft_time_limit > self.task_time_limit:
            raise ValueError(f"task_soft_time_limit ({self.task_soft_time_limit}s) must not exceed "
                             f"task_time_limit ({self.task_time_limit}s)")
        return self

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.redis_url


def load_settings(**overrides) -> Settings:
    """Settings from env and file, with explicit (CLI) overrides that are not None.
    Raises SettingsError with one line naming the bad values."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {one_line(exc)}") from None
