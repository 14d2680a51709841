"""Per-image inpainting requests: the service payload, as JSON files.

A request names an image and the settings its fill should use; it is the
payload the product's design starts from, accepted as written::

    {"image_id": "img_2026_07", "mask": {"type": "soft", "sigma": 4},
     "prompt": "preserve wood grain and ambient shadow", "scale": 0.85, "seed": 4412}

``scale`` is the denoising strength (``--strength``); ``mask`` sets the mask
type and feathering (``--mask-type``, ``--mask-sigma``: the soft mask the fill
is pasted back through). Also accepted: ``strength``, ``negative_prompt``,
``steps``, ``guidance``, ``inpaint`` (a variant name). A request overrides the
command's flags for its image only; the result is the same as passing the
equivalent flags (same plan, same fingerprint, same bytes).

A request file holds one request, a list of them, or JSON Lines; a folder
holds ``*.json`` files. ``image_id`` matches an input's file name or stem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.errors import RetouchError, one_line
from worker.pipeline.plan import Plan, make_plan


class RequestError(RetouchError):
    """A request file that is unreadable, malformed, or asks for invalid settings."""


class MaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["soft", "binary"] = "soft"
    sigma: float | None = None


class InpaintRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: str
    mask: MaskRequest | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    scale: float | None = None
    strength: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    inpaint: str | None = None

    def plan_fields(self) -> dict:
        """The Plan fields this request sets."""
        fields = {k: getattr(self, k) for k in ("prompt", "negative_prompt", "steps", "guidance", "seed", "inpaint")
                  if getattr(self, k) is not None}
        strength = self.strength if self.strength is not None else self.scale
        if strength is not None:
            fields["strength"] = strength
        if self.mask is not None:
            fields["mask_type"] = self.mask.type
            if self.mask.sigma is not None:
                fields["mask_sigma"] = self.mask.sigma
        return fields

    def apply(self, plan: Plan, model_dir: str | None = None) -> Plan:
        """``plan`` with this request's settings; raises PlanError naming a bad
        value, UnknownVariantError for a variant the store at ``model_dir`` lacks."""
        return make_plan(model_dir, **{**plan.model_dump(), **self.plan_fields()})


def _parse(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RequestError(f"{path}: cannot read request file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:   # JSON Lines
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise RequestError(f"{path}: not JSON or JSON Lines ({exc})") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise RequestError(f"{path}: expected a request object, a list of them, or JSON Lines")
    return items


def load_requests(path: str | Path, base: Plan | None = None, model_dir: str | None = None) -> dict[str, InpaintRequest]:
    """Requests by ``image_id`` from a file or a folder of ``*.json``. With
    ``base``, each is applied to it once (variants checked against the store at
    ``model_dir``) so bad values fail here, not per image.

    Raises RequestError naming the file and the cause (missing file, bad JSON,
    an unknown key, a value out of range, one image_id twice)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    elif path.exists():
        files = [path]
    else:
        raise RequestError(f"{path}: no such request file or folder")
    requests: dict[str, InpaintRequest] = {}
    for file in files:
        for item in _parse(file):
            try:
                request = InpaintRequest.model_validate(item)
                if base is not None:
                    request.apply(base, model_dir)
            except ValidationError as exc:
                raise RequestError(f"{file}: {one_line(exc)}") from None
            except RetouchError as exc:
                raise RequestError(f"{file}: image {item.get('image_id')!r}: {exc}") from None
            if request.image_id in requests:
                raise RequestError(f"{file}: image_id {request.image_id!r} is requested twice")
            requests[request.image_id] = request
    return requests


def request_for(requests: dict[str, InpaintRequest], source: str | Path) -> InpaintRequest | None:
    """The request whose ``image_id`` is the file's name or stem, or None."""
    source = Path(source)
    return requests.get(source.name) or requests.get(source.stem)
