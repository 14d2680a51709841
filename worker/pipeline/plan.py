"""What to do to each image: the ops and their parameters, and its fingerprint.

A :class:`Plan` is JSON-able (it travels inside the Celery message of every
image). Its fingerprint identifies "the same input processed with the same
settings and software", so re-runs can skip work already done."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from worker import __version__, inpaint, upscale
from worker.upscale import restoration
from worker.errors import PlanError, one_line
from worker.inpaint.base import InpaintParams
from worker.watermark import WatermarkError, load_template

OPS = ("remove-text", "deblock", "denoise", "upscale")
LEARNED = "learned"  # in Plan.watermarks: the template learned from the batch
REMOTE = "s3://"     # in Plan.watermarks: a template learned by a cluster job, read from S3 by the worker


def is_remote(watermark: str) -> bool:
    return watermark.startswith(REMOTE)


class Plan(BaseModel):
    ops: list[str] = Field(default_factory=lambda: ["remove-text"])
    scale: float = 4.0
    mask_type: Literal["soft", "binary"] = "soft"
    mask_sigma: float = 4.0
    mask_threshold: float = 0.3
    mask_dilate: int = 1
    seed: int = 0
    inpaint: str = "auto"
    upscale: str = "auto"
    # restoration before upscaling (worker.upscale.restoration): "auto" (the router decides when upscale is
    # auto), "none", or a pre-pass name; sigma: FFDNet's noise level (8-bit units; None: measured)
    prepass: str = "auto"
    sigma: float | None = None
    no_hallucination: bool = False
    margin: int = 32
    format: str | None = None
    quality: int = 95
    device: str = "auto"
    # learned inpainting (diffusion uses them all; LaMa none): see worker.inpaint.base.InpaintParams
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int = 30
    guidance: float = 7.5
    # watermarks and logos (worker.watermark): template files (read by path where the image is processed), or
    # "learned" (`retouch run` and `retouch submit` learn one from the batch first: submit puts the s3:// key of
    # the learned PNG here, fetched once per worker process); watermark_auto also looks for marks unaided
    watermarks: list[str] = Field(default_factory=list)
    watermark_auto: bool = False

    @field_validator("watermarks")
    @classmethod
    def _remote_templates(cls, watermarks: list[str]) -> list[str]:
        # a learned template in S3 (tasks.learning): s3://BUCKET/KEY.png, no relative segments
        for w in watermarks:
            if is_remote(w):
                bucket, _, key = w[len(REMOTE):].partition("/")
                if not bucket or not key.endswith(".png") or any(p in ("", ".", "..") for p in key.split("/")):
                    raise ValueError(f"watermark {w}: an S3 template must be s3://BUCKET/KEY.png")
        return watermarks

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: list[str]) -> list[str]:
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(OPS)}")
        if not ops:
            raise ValueError("at least one op is required")
        return [op for op in OPS if op in ops]  # canonical order: remove text, restore, then upscale

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: float) -> float:
        if not 1.0 <= scale <= 8.0:
            raise ValueError(f"scale must be between 1 and 8 but is {scale}")
        return scale

    @field_validator("strength")
    @classmethod
    def _strength(cls, strength: float) -> float:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1] but is {strength}")
        return strength

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: int) -> int:
        if not 1 <= steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000 but is {steps}")
        return steps

    @field_validator("guidance")
    @classmethod
    def _guidance(cls, guidance: float) -> float:
        if not 0.0 <= guidance <= 50.0:
            raise ValueError(f"guidance must be between 0 and 50 but is {guidance}")
        return guidance

    @model_validator(mode="after")
    def _denoising_steps(self) -> "Plan":
        # diffusers runs int(steps * strength) steps; zero would be an error deep inside the pipeline
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps x strength must be at least 1 but {self.steps} x {self.strength} rounds to 0")
        return self

    def inpaint_params(self) -> InpaintParams:
        """The settings a learned inpainter reads."""
        return InpaintParams(seed=self.seed, prompt=self.prompt, negative_prompt=self.negative_prompt,
                             strength=self.strength, steps=self.steps, guidance=self.guidance)

    def fingerprint(self) -> str:
        """sha256 (hex, 16 chars) of the settings that change the output and the
        software version. The device is left out: it should not change results."""
        payload = self.model_dump(exclude={"device"})
        payload["version"] = __version__
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_plan(model_dir: str | None = None, **fields) -> Plan:
    """A Plan from user settings, with its named variants checked against the
    registries (``model_dir``: the store that may hold the user's upscalers
    and inpainting models).
    Raises PlanError with one line naming the bad value."""
    try:
        plan = Plan(**fields)
    except ValidationError as exc:
        raise PlanError(one_line(exc)) from None
    if plan.inpaint != "auto":
        inpaint.get(plan.inpaint, model_dir)
    if plan.upscale != "auto":
        upscale.variant_info(plan.upscale, upscale.UpscaleOptions(model_dir=model_dir))
    if plan.prepass not in ("auto", "none"):
        restoration.prepass_info(plan.prepass)
    if plan.no_hallucination and (plan.prepass not in ("auto", "none") or {"deblock", "denoise"} & set(plan.ops)):
        raise PlanError("--no-hallucination forbids the learned deblock/denoise pre-passes")
    for path in plan.watermarks:
        if path != LEARNED and not is_remote(path):
            try:
                load_template(path)
            except WatermarkError as exc:
                raise PlanError(str(exc)) from None
    return plan
