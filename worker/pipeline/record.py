"""What the stages report about one image, and the record built from it.

A :class:`Trace` is filled by the steps (timings, decisions, per-stage details
such as the mask stats) and travels with the image from task to task; at the
end :func:`build_record` turns it into the JSON record that goes next to the
output (the sidecar of ``retouch run``, the ``.json`` object in S3), so both
executors describe an image the same way.

:class:`Context` is how a step reports: to the trace, to the decision log,
and to the injected metrics object (``monitoring.metrics.Metrics`` or None).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from monitoring.logs import log_decision
from worker import __version__
from worker.io import Image
from worker.pipeline.plan import Plan
from worker.pipeline.select import Decision


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into plain Python (records
    and task messages are JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Trace(BaseModel):
    """Per-image observations: stage seconds, model-selection decisions, and
    record fragments by name (``mask``, ``mask_params``, ``postprocess``...)."""

    timings: dict[str, float] = Field(default_factory=dict)
    decisions: list[Decision] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    def variants(self) -> dict[str, str]:
        return {d.stage: d.variant for d in self.decisions}


@dataclass
class Context:
    """Who is being processed, and where observations go."""

    image: str
    job: str | None = None
    metrics: Any = None          # monitoring.metrics.Metrics, or None
    trace: Trace = field(default_factory=Trace)

    def timed(self, stage: str, variant: str, device: str, seconds: float) -> None:
        self.trace.timings[stage] = round(seconds, 4)
        if self.metrics is not None:
            self.metrics.observe_stage(stage, variant, device, seconds)

    def decided(self, decision: Decision) -> None:
        decision = replace(decision, inputs=jsonable(decision.inputs))
        self.trace.decisions.append(decision)
        log_decision(decision.to_dict(), image=self.image, job=self.job)
        if self.metrics is not None:
            self.metrics.selection(decision.stage, decision.variant, decision.rule)

    def note(self, key: str, value: Any) -> None:
        """A record fragment (JSON-able) under ``key``."""
        self.trace.details[key] = jsonable(value)


def build_record(img: Image, plan: Plan, trace: Trace) -> dict:
    """The per-image record (JSON-able) from the decoded input and the trace."""
    return {
        "software": {"name": "retouch", "version": __version__},
        "ops": plan.ops,
        "seed": plan.seed,
        "fingerprint": plan.fingerprint(),
        "plan": plan.model_dump(),
        "timings": dict(trace.timings),
        "decisions": [d.to_dict() for d in trace.decisions],
        **trace.details,
        "variants": trace.variants(),
        "input": {"name": img.name, "width": img.size[0], "height": img.size[1], "format": img.format,
                  "bit_depth": img.bit_depth, "alpha": img.alpha is not None, "icc": img.icc_profile is not None},
    }
