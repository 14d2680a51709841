"""The values stages pass to each other, by name.

Inside one process they are plain arrays in a dict. Between Celery tasks the
executor stores them under the job's artifact prefix and reads them back
(``tasks.artifacts``); each one's :attr:`Artifact.kind` says how:

- ``map``: a float32 or bool array, HxW (confidence, soft mask, fill region)
  or HxWxC (the overlay estimate);
- ``pixels``: a :class:`Pixels` (colour plus optional alpha).

``kept`` artifacts stay next to the job's outputs and are listed in its
manifest (``retouch run --save-masks`` writes the same two maps as PNGs);
the others are dropped when the image is done.

Every stage also sees ``image``: the decoded input (:class:`worker.io.Image`),
which no stage replaces. ``pixels`` is the image as the stages so far have
left it: the input's pixels until a stage produces new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

IMAGE = "image"
PIXELS = "pixels"


@dataclass(frozen=True)
class Pixels:
    """float32 HxWx3 RGB in [0, 1] and an optional float32 HxW alpha."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: Literal["map", "pixels"]
    kept: bool = False
    description: str = ""


ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    Artifact(PIXELS, "pixels", description="the image as the stages so far left it"),
    Artifact("user_mask", "map", description="a mask the user gave, replacing detection (embedded runs)"),
    Artifact("confidence", "map", kept=True, description="detector confidence, float32 HxW"),
    Artifact("mask", "map", kept=True, description="soft mask (blend weights), float32 HxW"),
    Artifact("region", "map", kept=True, description="fill region, bool HxW"),
    Artifact("overlay", "map", description="semi-transparent overlay estimate, float32 HxWx4: colour and alpha "
                                           "(alpha 0 where there is none); see worker.unblend"),
    Artifact("unblend_limit", "map", description="the largest alpha unblended per pixel, float32 HxW: higher "
                                                 "where a template placed the overlay; see worker.unblend"),
    Artifact("fill", "pixels", description="the inpainter's raw output"),
)}


def declare(artifact: Artifact) -> None:
    """Add an artifact kind (a new stage's output)."""
    ARTIFACTS[artifact.name] = artifact
