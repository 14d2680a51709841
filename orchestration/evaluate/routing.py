"""How well ``auto`` routes upscale cases, from an evaluation's rows:

- per artifact kind, the mean LPIPS of every fixed variant, of ``auto`` and
  of the per-case best fixed variant (the oracle);
- overall: ``auto`` against the best single fixed variant and the oracle, and
  the kind oracle: the best fixed variant of each kind, picked knowing the
  kind (what a router that recognised every degradation perfectly, but not
  the photo, would reach at most; in-sample);
- the confusion: what ``auto`` chose against what was best, per kind;
- :func:`fit_thresholds`: the router's thresholds and the variant each rule
  runs, chosen on these cases (a grid search minimising the mean LPIPS the
  routes would reach, replaying the router's conditions on the measured
  features), scored leave-one-photo-out so the figure is not only in-sample.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict

from worker.pipeline.select import upscale_routes

AUTO = "auto"
METRIC = "lpips"


def _table(evaluation) -> tuple[dict, dict, dict]:
    """(per case: {variant: lpips}, per case: auto's choice, per case: info)."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    chosen: dict[str, str] = {}
    for r in evaluation.rows:
        if r["op"] != "upscale" or r["error"] is not None or r.get(METRIC) is None:
            continue
        scores[r["case"]][r["variant"]] = r[METRIC]
        if r["variant"] == AUTO:
            chosen[r["case"]] = r["chosen"]
    info = {c["case"]: c for c in evaluation.cases if c["op"] == "upscale"}
    return scores, chosen, info


def summary(evaluation) -> dict:
    """The routing report (JSON-able): ``kinds`` (per kind: n, mean LPIPS per
    fixed variant, auto, oracle), ``overall``, ``confusion`` (per kind:
    ``{"chosen -> best": count}``)."""
    scores, chosen, info = _table(evaluation)
    cases = [c for c in scores if AUTO in scores[c]]
    fixed = sorted({v for c in cases for v in scores[c] if v != AUTO})
    cases = [c for c in cases if all(v in scores[c] for v in fixed)]
    if not cases or not fixed:
        return {}
    best = {c: min(fixed, key=lambda v: (scores[c][v], v)) for c in cases}
    by_kind: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        by_kind[info[c]["kind"]].append(c)

    def mean(values):
        return round(statistics.fmean(values), 5)

    kinds = {}
    for kind, members in sorted(by_kind.items()):
        kinds[kind] = {"n": len(members), **{v: mean(scores[c][v] for c in members) for v in fixed},
                       AUTO: mean(scores[c][AUTO] for c in members),
                       "oracle": mean(scores[c][best[c]] for c in members)}
    means = {v: mean(scores[c][v] for c in cases) for v in fixed}
    best_fixed = min(means, key=means.get)
    auto, oracle = mean(scores[c][AUTO] for c in cases), mean(scores[c][best[c]] for c in cases)
    kind_best = {kind: min(fixed, key=lambda v: (sum(scores[c][v] for c in members), v))
                 for kind, members in by_kind.items()}
    kind_oracle = mean(scores[c][kind_best[info[c]["kind"]]] for c in cases)
    confusion = {kind: dict(sorted(Counter(f"{chosen.get(c)} -> {best[c]}" for c in members).items()))
                 for kind, members in sorted(by_kind.items())}
    agree = sum(chosen.get(c) == best[c] for c in cases)
    return {"metric": METRIC, "cases": len(cases), "photos": len({info[c]["photo"] for c in cases}),
            "fixed": fixed, "kinds": kinds,
            "overall": {"auto": auto, "best_fixed": best_fixed, "best_fixed_lpips": means[best_fixed],
                        "oracle": oracle, "fixed": means,
                        "auto_vs_best_fixed": round(auto / means[best_fixed] - 1, 4),
                        "auto_vs_oracle": round(auto / oracle - 1, 4),
                        "kind_oracle": kind_oracle, "kind_best": dict(sorted(kind_best.items())),
                        "kind_oracle_vs_best_fixed": round(kind_oracle / means[best_fixed] - 1, 4),
                        "kind_oracle_vs_oracle": round(kind_oracle / oracle - 1, 4),
                        "auto_picked_best": agree},
            "confusion": confusion}


# The grid the thresholds are chosen from.
GRID = {
    "heavy_jpeg_q": (0, 15, 20, 25, 30, 40),
    "medium_jpeg_q": (0, 40, 50, 60, 75),
    "noise_sigma": (6.0, 8.0, 10.0, 12.0, 15.0, 99.0),
    "noise_grain_max": (0.1, 0.3, 0.5, 1.0),
    "grain_score": (0.5, 0.8, 1.01),
    "grain_sigma": (6.0, 8.0, 10.0, 13.0),
    "texture": (0.5, 0.55, 0.6, 9.0),
}


def _rule(features: dict, routes) -> str:
    """The rule the first matching route gives (as :func:`route_upscale` would, all models installed)."""
    return next(r.rule for r in routes if all(c.holds(features) for c in r.when))


def _fit(cases: list[str], rules: dict, scores: dict, variants: list[str]) -> tuple[int, dict, float]:
    """The best (combination index, rule -> variant, total LPIPS) over ``cases``:
    per combination, each rule gets the fixed variant with the least LPIPS on
    the cases it receives."""
    best = None
    for i, rule_of in rules.items():
        groups: dict[str, list[str]] = defaultdict(list)
        for c in cases:
            groups[rule_of[c]].append(c)
        total, chosen = 0.0, {}
        for rule, members in groups.items():
            # ties (a pre-pass that changed nothing) go to the simpler variant
            v = min(variants, key=lambda v: (round(sum(scores[c][v] for c in members), 6), "+" in v, v))
            chosen[rule] = v
            total += sum(scores[c][v] for c in members)
        if best is None or total < best[2] - 1e-12:
            best = (i, chosen, total)
    return best


def fit_thresholds(evaluation, grid: dict | None = None) -> dict:
    """The thresholds (from ``grid``, default :data:`GRID`) and the variant per
    rule (pre-pass + upscaler, among the fixed variants evaluated) that
    minimise the mean LPIPS over all cases, replaying the router's conditions
    on each case's measured features; and the leave-one-photo-out figure
    (fitted without the photo, scored on it)."""
    scores, _, info = _table(evaluation)
    variants = sorted({v for c in scores for v in scores[c] if v != AUTO and v not in ("lanczos", "bicubic")})
    cases = sorted(c for c in scores if info.get(c, {}).get("features") and all(v in scores[c] for v in variants))
    features = {c: info[c]["features"] for c in cases}
    grid = grid or GRID
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    rules = {}
    for i, t in enumerate(combos):
        routes = upscale_routes(t)
        rules[i] = {c: _rule(features[c], routes) for c in cases}
    i, chosen, total = _fit(cases, rules, scores, variants)
    held_out = []
    for photo in sorted({info[c]["photo"] for c in cases}):
        train = [c for c in cases if info[c]["photo"] != photo]
        j, models, _ = _fit(train, rules, scores, variants)
        for c in cases:
            if info[c]["photo"] == photo:
                held_out.append(scores[c][models.get(rules[j][c], "realesrgan-x4plus")])
    current = [scores[c].get(AUTO) for c in cases if scores[c].get(AUTO) is not None]
    return {"thresholds": combos[i], "models": chosen, "in_sample_lpips": round(total / len(cases), 5),
            "leave_one_photo_out_lpips": round(statistics.fmean(held_out), 5),
            "auto_lpips": round(statistics.fmean(current), 5) if current else None,
            "combinations": len(combos), "cases": len(cases), "variants": variants}


def format_summary(report: dict) -> str:
    """The routing report as a plain-text table."""
    if not report:
        return "routing: no upscale cases with auto and every fixed variant\n"
    fixed = report["fixed"]
    short = {v: v.replace("realesrgan-", "esr-").replace("waifu2x-", "w2x-").replace("realesr-", "esr-")
             for v in fixed}
    cols = fixed + [AUTO, "oracle"]
    lines = [f"routing ({report['metric']}, mean per kind; {report['cases']} cases, {report['photos']} photos)",
             "  " + f"{'kind':<13}{'n':>3} " + " ".join(f"{short.get(c, c)[:18]:>18}" for c in cols)]
    for kind, row in report["kinds"].items():
        lines.append("  " + f"{kind:<13}{row['n']:>3} " + " ".join(f"{row[c]:>18.4f}" for c in cols))
    o = report["overall"]
    lines.append("  " + f"{'all':<13}{report['cases']:>3} " + " ".join(
        f"{(o['fixed'][c] if c in fixed else o[c]):>18.4f}" for c in cols))
    lines.append(f"  auto {o['auto']:.4f} vs best fixed {o['best_fixed']} {o['best_fixed_lpips']:.4f} "
                 f"({o['auto_vs_best_fixed']:+.1%}); vs oracle {o['oracle']:.4f} ({o['auto_vs_oracle']:+.1%}); "
                 f"auto picked the best variant in {o['auto_picked_best']}/{report['cases']}")
    lines.append(f"  kind oracle (the best fixed variant per kind, knowing the kind) {o['kind_oracle']:.4f}: "
                 f"{o['kind_oracle_vs_best_fixed']:+.1%} vs best fixed, {o['kind_oracle_vs_oracle']:+.1%} vs oracle")
    lines.append("  confusion (auto's choice -> best):")
    for kind, counts in report["confusion"].items():
        lines.append(f"    {kind:<13} " + "; ".join(f"{k} x{n}" for k, n in counts.items()))
    return "\n".join(lines) + "\n"
