"""The image job: everything one image carries through a distributed run.

One :class:`ImageJob` per image is built when a job is submitted and travels
as JSON from task to task (each Celery task gets it and returns it, updated).
It holds keys, never pixels: the input object, the output object, where the
image's artifacts live and which ones exist, the plan and its fingerprint,
what the stages reported (:class:`Trace`) and the status.

``schema_version`` lets a worker refuse a message written by another version
of retouch with one clear line (:class:`JobSchemaError`) instead of a
KeyError deep inside a task.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.errors import RetouchError, one_line
from worker.pipeline.plan import Plan
from worker.pipeline.record import Trace

SCHEMA_VERSION = 1
Status = Literal["pending", "ok", "failed", "skipped"]


class JobSchemaError(RetouchError):
    """A task message that is not an image job this worker can read."""


class ImageJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    job: str
    batch: int = 0
    bucket: str                       # the input object
    key: str
    etag: str
    out_bucket: str                   # the output object
    out_key: str
    artifact_prefix: str              # where this image's artifacts go (in out_bucket)
    plan: Plan
    fingerprint: str
    force: bool = False
    revise: bool = False              # a reprocess: write a new version of an existing output
    previous: str | None = None       # the output's fingerprint (lineage) before this reprocess
    revision: str | None = None       # the fingerprint (lineage) of the output this job wrote
    max_pixels: int
    queue: str                        # the GPU (or cpu) queue of its heavy stages
    status: Status = "pending"
    error: str | None = None
    begun: bool = False               # the first task counted it and checked for a previous output
    artifacts: dict[str, str] = Field(default_factory=dict)   # artifact name -> key in out_bucket
    trace: Trace = Field(default_factory=Trace)
    task_seconds: dict[str, float] = Field(default_factory=dict)  # per task (its stages joined by '+')
    workers: dict[str, str] = Field(default_factory=dict)          # stage -> worker hostname
    output: str | None = None         # s3:// URL of the written output
    record_key: str | None = None     # key of its JSON record (in out_bucket)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def out_url(self) -> str:
        return f"s3://{self.out_bucket}/{self.out_key}"

    @property
    def done(self) -> bool:
        return self.status != "pending"

    def fail(self, cause: str) -> "ImageJob":
        """Mark failed with a one-line error that starts with the input's URL."""
        line = " ".join(str(cause).split())
        self.status = "failed"
        self.error = line if line.startswith(self.url) else f"{self.url}: {line}"
        return self

    def to_message(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_message(cls, data: Any) -> "ImageJob":
        """Raises JobSchemaError (one line, naming the image when it can) for a
        message of another schema version or shape."""
        where = f"{data.get('bucket', '?')}/{data.get('key', '?')}" if isinstance(data, dict) else "?"
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise JobSchemaError(f"s3://{where}: task message has schema version {version}, this worker reads "
                                 f"version {SCHEMA_VERSION} (submitted by another retouch version?)")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise JobSchemaError(f"s3://{where}: malformed task message ({one_line(exc)})") from None
