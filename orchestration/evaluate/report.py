"""The evaluation report: tables (JSON, CSV), crops, heatmaps, plots, index.html.

Layout of ``out/``::

    results.json   config, per-variant summary, per-case detection, per-image rows
    summary.csv    per (op, variant): means, 95% CI half-widths, n, rank
    images.csv     per (case, variant): every metric
    cases.csv      per case: degradation, detection precision/recall/IoU, coverages
    timings.json   wall-clock seconds per (case, variant) (not deterministic)
    img/           before / after / ground-truth crops, error heatmaps, mask overlays
    plots/         confidence and coverage histograms, per-variant bar chart
    index.html     all of the above on one page

Everything except ``timings.json`` is a pure function of the inputs and the
seed, so two runs with the same seed write identical tables.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from orchestration.evaluate.dataset import Case
from orchestration.evaluate.runner import DETECTION, INPUT, QUALITY, Evaluation
from worker.quality.metrics import error_map

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
HEATMAP_MAX = 0.25   # mean absolute error shown at full colour
CROP_MIN = 96        # px, smallest crop side
CROP_MARGIN = 12


def _png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)).save(path, optimize=False)


def _box(case: Case, predicted: np.ndarray | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) around the true and detected masks, at least CROP_MIN px."""
    h, w = case.clean.shape[:2]
    mask = case.mask if case.mask is not None else None
    if mask is not None and predicted is not None:
        mask = mask | predicted
    if mask is None or not mask.any():
        side = min(h, w, max(CROP_MIN, min(h, w) // 2))
        y0, x0 = (h - side) // 2, (w - side) // 2
        return y0, y0 + side, x0, x0 + side
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - CROP_MARGIN), min(h, ys.max() + 1 + CROP_MARGIN)
    x0, x1 = max(0, xs.min() - CROP_MARGIN), min(w, xs.max() + 1 + CROP_MARGIN)
    for lo, hi, size in ((0, 1, h), (2, 3, w)):
        box = [y0, y1, x0, x1]
        short = CROP_MIN - (box[hi] - box[lo])
        if short > 0:
            box[lo] = max(0, box[lo] - short // 2)
            box[hi] = min(size, box[lo] + CROP_MIN)
            box[lo] = max(0, box[hi] - CROP_MIN)
        y0, y1, x0, x1 = box
    return y0, y1, x0, x1


def heatmap(err: np.ndarray) -> np.ndarray:
    """Error map (HxW, [0, 1]) -> float32 HxWx3 colour image (inferno, 0..HEATMAP_MAX)."""
    from matplotlib import colormaps

    return colormaps["inferno"](np.clip(err / HEATMAP_MAX, 0, 1))[..., :3].astype(np.float32)


def mask_overlay(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """White: found, red: missed (true only), blue: extra (detected only), black: neither."""
    out = np.zeros(truth.shape + (3,), np.float32)
    out[truth & predicted] = (1, 1, 1)
    out[truth & ~predicted] = (1, 0.15, 0.15)
    out[~truth & predicted] = (0.2, 0.45, 1)
    return out


class Visuals:
    """``on_case`` callback for :func:`runner.evaluate`: writes the crops of the
    first ``limit`` cases into ``out/img`` and remembers them for the page."""

    def __init__(self, out: Path, limit: int = 24):
        self.out = Path(out)
        self.limit = limit
        self.cases: list[dict] = []

    def __call__(self, case: Case, outputs: dict, predicted: np.ndarray | None, confidence) -> None:
        if len(self.cases) >= self.limit or not outputs:
            return
        y0, y1, x0, x1 = _box(case, predicted)
        crop = (slice(y0, y1), slice(x0, x1))
        before = case.degraded
        if case.factor > 1:  # show the low-resolution input at the output's size, unsmoothed
            before = np.repeat(np.repeat(before, case.factor, axis=0), case.factor, axis=1)
            before = before[:case.clean.shape[0], :case.clean.shape[1]]
        entry = {"case": case.id, "op": case.op, "kind": case.kind, "jpeg": case.jpeg,
                 "box": [int(y0), int(y1), int(x0), int(x1)],
                 "before": f"img/{case.id}.before.png", "truth": f"img/{case.id}.truth.png",
                 "before_err": f"img/{case.id}.before.err.png", "variants": []}
        _png(before[crop], self.out / entry["before"])
        _png(case.clean[crop], self.out / entry["truth"])
        _png(heatmap(error_map(case.clean[crop], before[crop])), self.out / entry["before_err"])
        if case.mask is not None and predicted is not None:
            entry["mask"] = f"img/{case.id}.mask.png"
            _png(mask_overlay(case.mask[crop], predicted[crop]), self.out / entry["mask"])
        for variant, output in outputs.items():
            after, err = f"img/{case.id}.{variant}.png", f"img/{case.id}.{variant}.err.png"
            _png(output[crop], self.out / after)
            _png(heatmap(error_map(case.clean[crop], output[crop])), self.out / err)
            entry["variants"].append({"name": variant, "after": after, "err": err})
        self.cases.append(entry)


def plots(out: Path, evaluation: Evaluation, summary: list[dict]) -> dict[str, str]:
    """Matplotlib PNGs: detector-confidence and mask-coverage histograms, and the
    ranking metric per variant with its confidence interval. Returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    conf = np.concatenate(evaluation.confidences) if evaluation.confidences else np.zeros(0)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.hist(conf, bins=20, range=(0, 1), color="#4c72b0")
    ax.set(title="Detector confidence inside detected masks", xlabel="confidence", ylabel="pixels (sampled)")
    fig.tight_layout()
    fig.savefig(folder / "confidence.png")
    plt.close(fig)
    made["confidence"] = "plots/confidence.png"

    detected = [c for c in evaluation.cases if c.get("coverage_true") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    if detected:
        true_cov = [100 * c["coverage_true"] for c in detected]
        pred_cov = [100 * c["coverage_pred"] for c in detected]
        top = max(true_cov + pred_cov + [1.0])
        ax.hist([true_cov, pred_cov], bins=12, range=(0, top), label=["true overlay", "detected fill region"],
                color=["#55a868", "#c44e52"])
        ax.legend()
    ax.set(title="Mask coverage per image", xlabel="% of image", ylabel="images")
    fig.tight_layout()
    fig.savefig(folder / "coverage.png")
    plt.close(fig)
    made["coverage"] = "plots/coverage.png"

    for op in sorted({e["op"] for e in summary}):
        entries = [e for e in summary if e["op"] == op and e.get("ranked_by")]
        if not entries:
            continue
        metric = entries[0]["ranked_by"]
        ref = [e for e in summary if e["op"] == op and e["variant"] == INPUT and e.get(metric) is not None]
        entries = sorted(entries, key=lambda e: e["rank"]) + ref
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        ax.bar([e["variant"] for e in entries], [e[metric] for e in entries],
               yerr=[e.get(f"{metric}_ci") or 0 for e in entries], capsize=4,
               color=["#8c8c8c" if e["variant"] == INPUT else "#4c72b0" for e in entries])
        ax.set(title=f"{op}: {metric} per variant (95% CI)", ylabel=metric)
        fig.tight_layout()
        name = f"rank-{op}"
        fig.savefig(folder / f"{name}.png")
        plt.close(fig)
        made[name] = f"plots/{name}.png"
    return made


def _csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def write_tables(out: Path, evaluation: Evaluation, summary: list[dict], config: dict) -> dict[str, str]:
    """results.json, summary.csv, images.csv, cases.csv and timings.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"config": config, "summary": summary, "cases": evaluation.cases, "rows": evaluation.rows}
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    metric_cols = [m for m in QUALITY if any(m in r for r in evaluation.rows)]
    summary_cols = ["op", "variant", "rank", "ranked_by", "n", "failures"]
    summary_cols += [c for m in metric_cols for c in (m, f"{m}_ci")]
    _csv(out / "summary.csv", [dict(e, chosen=json.dumps(e["chosen"], sort_keys=True) if e.get("chosen") else None) for e in summary], summary_cols + ["chosen"])
    _csv(out / "images.csv", evaluation.rows,
         ["case", "photo", "op", "kind", "jpeg", "variant", "chosen", "rule"] + metric_cols + ["error"])
    _csv(out / "cases.csv", evaluation.cases,
         ["case", "photo", "op", "kind", "jpeg", "width", "height", *DETECTION, "confidence_mean"])
    (out / "timings.json").write_text(json.dumps(evaluation.timings, indent=2) + "\n")
    return {"json": "results.json", "summary": "summary.csv", "images": "images.csv", "cases": "cases.csv",
            "timings": "timings.json"}


def write_html(out: Path, evaluation: Evaluation, summary: list[dict], config: dict, visuals: Visuals,
               plot_paths: dict[str, str], tables: dict[str, str]) -> Path:
    """Render index.html from the jinja2 template next to this module."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, d=4: "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    ops = sorted({e["op"] for e in summary})
    metric_cols = {op: [m for m in QUALITY if any(m in e for e in summary if e["op"] == op)] for op in ops}
    ordered = sorted(summary, key=lambda e: (e["op"], e.get("rank", 999), e["variant"]))
    html = env.get_template(TEMPLATE).render(
        config=config, ops=ops, summary=ordered, metric_cols=metric_cols, rows=evaluation.rows,
        cases=evaluation.cases, visuals=visuals.cases, plots=plot_paths, tables=tables,
        detection=[c for c in evaluation.cases if c.get("iou") is not None], input_name=INPUT)
    path = Path(out) / "index.html"
    path.write_text(html)
    return path


def write_report(out: Path, evaluation: Evaluation, summary: list[dict], config: dict, visuals: Visuals) -> Path:
    """Tables, plots and index.html into ``out``; returns the page's path."""
    tables = write_tables(out, evaluation, summary, config)
    plot_paths = plots(out, evaluation, summary)
    return write_html(out, evaluation, summary, config, visuals, plot_paths, tables)
