"""Request options -> the :class:`Plan` that ``retouch run`` would build.

A synchronous request carries its options as multipart form fields named as
in the seed's payload (``mask.type``, ``mask.sigma``, ``prompt``, ``scale``,
``seed``; ``strategy``, ``target_scale`` for the upscaler), and/or as that
payload itself, JSON in the ``payload`` field:

    {"image_id": "img_2026_07", "mask": {"type": "soft", "sigma": 4},
     "prompt": "preserve wood grain and ambient shadow", "scale": 0.85, "seed": 4412}

A form field overrides the same option in ``payload``. Unknown options are
refused (a typo must not silently fall back to a default). Options left out
take the Plan's defaults, the same as ``retouch run``'s flags, so equal
settings give an equal plan, fingerprint and output.

The seed's ``prompt`` and ``scale`` (the denoising strength, as in
``worker.pipeline.request``: ``strength`` wins when both are given) go to the
Plan fields the diffusion variants read (``prompt``, ``strength``), with
``negative_prompt``, ``steps`` and ``guidance``: the flags ``--prompt``,
``--strength``, ... of ``retouch run``. A seed option the Plan has no field
for is accepted and recorded in the response's record under ``request``,
marked unused.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.errors import RetouchError, one_line
from worker.pipeline.plan import Plan

# The seed's "artifact-aware" strategy is retouch's measured choice.
STRATEGIES = {"artifact-aware": "auto", "auto": "auto"}
# request option -> Plan field that carries it to the inpainting variants, when the Plan has it
PASS_THROUGH = {"prompt": "prompt", "negative_prompt": "negative_prompt", "scale": "strength",
                "strength": "strength", "steps": "steps", "guidance": "guidance"}


class OptionsError(RetouchError):
    """Request options that do not validate."""


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image_id: str | None = Field(None, max_length=256, description="the client's name for the image (recorded)")
    seed: int | None = None
    format: str | None = Field(None, description="output format: jpeg, png, tiff, webp, bmp (default: the input's)")
    quality: int | None = Field(None, ge=1, le=100)

    def plan_fields(self) -> dict:
        return {k: v for k, v in {"seed": self.seed, "format": self.format, "quality": self.quality}.items()
                if v is not None}

    def request_note(self) -> dict:
        return {"image_id": self.image_id} if self.image_id else {}


class MaskOptions(Options):
    mask_type: Literal["soft", "binary"] | None = Field(None, alias="mask.type")
    mask_sigma: float | None = Field(None, alias="mask.sigma", ge=0, le=64)
    mask_threshold: float | None = Field(None, alias="mask.threshold", gt=0, lt=1)
    mask_dilate: int | None = Field(None, alias="mask.dilate", ge=0, le=64)

    def plan_fields(self) -> dict:
        fields = {"ops": ["remove-text"], **super().plan_fields()}
        for name in ("mask_type", "mask_sigma", "mask_threshold", "mask_dilate"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields


class InpaintOptions(MaskOptions):
    inpaint: str | None = Field(None, description="auto or a variant: telea, ns, patchmatch, a model in the store")
    prompt: str | None = Field(None, max_length=2000, description="what the fill should show (diffusion)")
    negative_prompt: str | None = Field(None, max_length=2000)
    scale: float | None = Field(None, ge=0, le=1, description="the seed's name for the denoising strength")
    strength: float | None = Field(None, ge=0, le=1, description="denoising strength in (0, 1]")
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)
    postprocess: bool | None = None

    def plan_fields(self) -> dict:
        fields = super().plan_fields()
        if self.inpaint is not None:
            fields["inpaint"] = self.inpaint
        # "scale" first, so an explicit "strength" wins
        for option in sorted(PASS_THROUGH, key=lambda o: o == "strength"):
            field = PASS_THROUGH[option]
            if getattr(self, option) is not None and field in Plan.model_fields:
                fields[field] = getattr(self, option)
        return fields

    def request_note(self) -> dict:
        note = super().request_note()
        given = {k: getattr(self, k) for k in PASS_THROUGH if getattr(self, k) is not None}
        if given:
            note.update(given)
            unused = [k for k in given if PASS_THROUGH[k] not in Plan.model_fields]
            if unused:
                note["unused"] = unused
                note["why_unused"] = "this server's Plan has no field for them"
        return note


class UpscaleOptions(Options):
    strategy: str | None = Field(None, description="artifact-aware (measured choice) or an upscaler variant")
    target_scale: float | None = Field(None, ge=1, le=8)
    no_hallucination: bool | None = None

    def plan_fields(self) -> dict:
        fields = {"ops": ["upscale"], **super().plan_fields()}
        if self.strategy is not None:
            fields["upscale"] = STRATEGIES.get(self.strategy, self.strategy)
        if self.target_scale is not None:
            fields["scale"] = self.target_scale
        if self.no_hallucination is not None:
            fields["no_hallucination"] = self.no_hallucination
        return fields


def flatten(payload: dict) -> dict:
    """The seed's nested payload -> option names (``{"mask": {"type": t}}`` -> ``{"mask.type": t}``)."""
    flat = {}
    for key, value in payload.items():
        if key == "mask" and isinstance(value, dict):
            flat.update({f"mask.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def parse(model: type[Options], payload: str | None, fields: dict) -> Options:
    """Options from the ``payload`` JSON and the form ``fields`` (None = not given).
    Raises OptionsError with one line naming the bad option."""
    merged: dict = {}
    if payload:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise OptionsError(f"payload is not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(data, dict):
            raise OptionsError("payload must be a JSON object")
        merged.update(flatten(data))
    merged.update({k: v for k, v in fields.items() if v is not None})
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise OptionsError(f"invalid options: {one_line(exc)}") from None
