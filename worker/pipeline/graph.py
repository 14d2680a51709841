"""The pipeline, declared once: its stages in order, each with the queue it
runs on, the artifacts it consumes and produces, and its step function.

Both executors walk this list and nothing else:

- ``orchestration.local`` runs every stage a plan needs, in process;
- ``tasks.canvas`` cuts the same list into :func:`segments` (consecutive
  stages on the same queue run in one task, so an image's detect and inpaint
  share one read of the input) and chains one generic task per segment;
  ``tasks.pipeline`` runs any segment with :func:`run_stage`.

Adding a stage is one :class:`Stage` entry (``add_stage``) plus its step
function (see :mod:`worker.pipeline.steps` for the contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from worker.pipeline import steps
from worker.pipeline.artifacts import ARTIFACTS, IMAGE, PIXELS
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.record import Context
from worker.pipeline.restore_steps import applies as restores
from worker.pipeline.restore_steps import deblock, denoise
from worker.pipeline.watermark_step import watermark

Step = Callable[[steps.Artifacts, Plan, ModelCache, Context], steps.Artifacts]


def always(plan: Plan) -> bool:
    return True


def op(name: str) -> Callable[[Plan], bool]:
    """A stage that runs when the plan has op ``name``."""
    def applies(plan: Plan) -> bool:
        return name in plan.ops
    applies.__name__ = f"op_{name.replace('-', '_')}"
    return applies


@dataclass(frozen=True)
class Stage:
    """``heavy``: runs on the image's GPU queue (it loads models), else on the
    cpu queue. ``applies(plan)``: whether a plan needs the stage."""

    name: str
    step: Step
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    heavy: bool = False
    applies: Callable[[Plan], bool] = field(default=always)
    description: str = ""
    code_version: str = "1"


STAGES: list[Stage] = [
    Stage("detect", steps.detect, consumes=(PIXELS, "user_mask"), produces=("confidence", "mask", "region", "overlay"),
          heavy=True, applies=op("remove-text"),
          description="text confidence map (DBNet), the stroke-following soft mask and the overlay's "
                      "colour and alpha",
          code_version="6"),  # 2: lines read back by the recogniser (regions that are not text left alone);
                              # 3: the learned stroke segmenter adds the glyphs colour evidence misses;
                              # 4: lines the detector missed, recovered by the segmenter and read back;
                              # 5: beyond a recovered line, only strokes the segmenter backs when its colour fit disagrees;
                              # 6: recovery also looks with the image turned 30 degrees each way (leaning lines)
    Stage("watermark", watermark, consumes=(PIXELS, "confidence", "mask", "region", "overlay"),
          produces=("confidence", "mask", "region", "overlay", "unblend_limit"), heavy=True,
          applies=op("remove-text"),
          description="watermarks and logos (templates, learned, repeated marks) merged into the text maps",
          code_version="2"),  # 2: unblend_limit (a template's marks unblended up to alpha 0.95)
    Stage("unblend", steps.unblend, consumes=(PIXELS, "overlay", "region", "unblend_limit"),
          produces=(PIXELS, "region"),
          heavy=True, applies=op("remove-text"),
          description="lift semi-transparent overlays by reversing the blend; leave the rest to inpaint"),
    Stage("inpaint", steps.inpaint, consumes=(PIXELS, "region"), produces=("fill",), heavy=True,
          applies=op("remove-text"), description="fill the region with the chosen variant"),
    Stage("postprocess", steps.postprocess, consumes=(PIXELS, "fill", "mask", "region"), produces=(PIXELS,),
          applies=op("remove-text"), description="colour continuity and soft blending of the fill"),
    Stage("deblock", deblock, consumes=(PIXELS,), produces=(PIXELS,), heavy=True, applies=restores("deblock"),
          description="reduce JPEG blocking (waifu2x photo), on its own or before an upscaler"),
    Stage("denoise", denoise, consumes=(PIXELS,), produces=(PIXELS,), heavy=True, applies=restores("denoise"),
          description="remove noise or film grain (FFDNet at the measured sigma), on its own or before an upscaler"),
    Stage("upscale", steps.upscale, consumes=(PIXELS,), produces=(PIXELS,), heavy=True, applies=op("upscale"),
          description="upscale with the chosen interpolator or learned model"),
]


def _check(stage: Stage) -> Stage:
    unknown = [a for a in stage.consumes + stage.produces if a != IMAGE and a not in ARTIFACTS]
    if unknown:
        raise ValueError(f"stage {stage.name}: undeclared artifact(s) {', '.join(unknown)} "
                         "(declare them in worker.pipeline.artifacts)")
    return stage


def get(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def add_stage(stage: Stage, *, after: str | None = None, before: str | None = None) -> None:
    """Insert ``stage`` after or before a named stage (default: last)."""
    _check(stage)
    if any(s.name == stage.name for s in STAGES):
        raise ValueError(f"stage {stage.name!r} is already declared")
    index = len(STAGES)
    if after is not None:
        index = STAGES.index(get(after)) + 1
    elif before is not None:
        index = STAGES.index(get(before))
    STAGES.insert(index, stage)


def remove_stage(name: str) -> None:
    STAGES.remove(get(name))


def stages_for(plan: Plan) -> list[Stage]:
    """The stages ``plan`` needs, in order."""
    return [s for s in STAGES if s.applies(plan)]


def code_versions(plan: Plan) -> dict[str, str]:
    """The code version of each stage ``plan`` runs (part of an output's lineage)."""
    return {s.name: s.code_version for s in stages_for(plan)}


def segments(stages: list[Stage], queue: Callable[[Stage], object] | None = None) -> list[list[Stage]]:
    """Consecutive stages on the same queue, grouped: one task each.
    ``queue(stage)`` names the queue a stage runs on (default: its kind,
    heavy or light); where heavy and light stages share one queue (no GPU
    queue), an image's stages run in one task, with no artifact round trips."""
    where = queue or (lambda stage: stage.heavy)
    groups: list[list[Stage]] = []
    for stage in stages:
        if groups and where(groups[-1][-1]) == where(stage):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def needed_after(stages: list[Stage], done: int) -> set[str]:
    """Artifacts that stages after index ``done`` (of ``stages``) consume."""
    return {a for s in stages[done + 1:] for a in s.consumes}


def run_stage(stage: Stage, arts: steps.Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> steps.Artifacts:
    """Run one stage on ``arts`` (a dict holding at least ``image`` and
    ``pixels``); returns what it produced (also merged into ``arts``)."""
    inputs = {name: arts.get(name) for name in stage.consumes}
    inputs[IMAGE] = arts[IMAGE]
    produced = stage.step(inputs, plan, cache, ctx)
    stray = set(produced) - set(stage.produces)
    if stray:
        raise RuntimeError(f"stage {stage.name} produced undeclared artifact(s) {', '.join(sorted(stray))}")
    arts.update(produced)
    return produced


for _stage in STAGES:
    _check(_stage)
