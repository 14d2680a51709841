"""The whole evaluation: photos -> cases -> runs -> report (what ``retouch eval`` calls)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.evaluate import dataset, report, routing, runner
from worker import __version__
from worker.pipeline.cache import ModelCache
from worker.quality.lpips import LPIPS

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    dataset: str = dataset.BUNDLED
    ops: list[str] = field(default_factory=lambda: ["remove-text"])
    variants: list[str] = field(default_factory=lambda: ["telea", "patchmatch", "auto"])
    seed: int = 0
    kinds: list[str] | None = None
    jpeg: list[int] = field(default_factory=lambda: [0])
    max_side: int = 384
    max_pixels: int = 100_000_000
    model_dir: str | None = None
    device: str = "cpu"
    lpips: bool = True
    max_visuals: int = 24
    mask: str = "detected"  # or "true": the true overlay mask as a user mask


@dataclass
class SuiteResult:
    summary: list[dict]
    evaluation: runner.Evaluation
    page: Path
    routing: dict = field(default_factory=dict)   # upscale: auto vs fixed variants vs oracle (routing.py)


def run_suite(config: EvalConfig, out: str | Path, storage=None) -> SuiteResult:
    """Build the cases, run every variant, write the report into ``out``.

    Raises EvalError for a bad dataset, op, kind or variant, and
    :class:`worker.quality.lpips.LPIPSWeightsMissing` if LPIPS is on and the model
    store has not been provisioned."""
    out = Path(out)
    variants = runner.resolve_variants(config.variants, config.ops)
    metric = None
    if config.lpips:
        metric = LPIPS(config.model_dir or "", device="cpu" if config.device == "auto" else config.device)
    photos = dataset.load_photos(config.dataset, config.max_side, config.max_pixels, storage)
    cases = dataset.build_cases(photos, config.ops, config.seed, config.kinds, config.jpeg)
    log.info("%d photos -> %d cases; variants %s", len(photos), len(cases), variants)
    cache = ModelCache(device=config.device, model_dir=config.model_dir)
    visuals = report.Visuals(out, config.max_visuals)
    evaluation = runner.evaluate(cases, variants, cache, config.seed, metric, on_case=visuals,
                                 mask=config.mask)
    summary = runner.summarise(evaluation)
    described = {
        "dataset": config.dataset, "photos": len(photos), "cases": len(cases), "seed": config.seed,
        "ops": config.ops, "variants": variants, "kinds": sorted({c.kind for c in cases}),
        "jpeg": config.jpeg, "mask": config.mask, "max_side": config.max_side, "lpips": config.lpips, "version": __version__,
    }
    page = report.write_report(out, evaluation, summary, described, visuals)
    routed = routing.summary(evaluation) if "upscale" in config.ops else {}
    if routed:
        routed["fit"] = routing.fit_thresholds(evaluation)
        (out / "routing.json").write_text(json.dumps(routed, indent=2) + "\n")
        (out / "routing.txt").write_text(routing.format_summary(routed))
    return SuiteResult(summary, evaluation, page, routed)
