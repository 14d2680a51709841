"""The routing report and the threshold fit, on a labelled table whose best
variant per case is known: noisy cases are best with FFDNet first, blocky ones
with a deblocking pass, the rest with the plain upscaler."""

from __future__ import annotations

from orchestration.evaluate import routing
from orchestration.evaluate.runner import Evaluation

PHOTO = {"content": "photo", "flat": 0.05, "top_colours": 0.3, "edges": 0.02, "grey": False,
         "jpeg_q": 100, "jpeg_q_source": "pixels", "sigma": 2.0, "grain_score": 0.0, "grain_sigma": 0.0}
PLAIN, DENOISE, DEBLOCK = "realesrgan-x4plus", "ffdnet+realesrgan-x4plus", "waifu2x-noise3+realesrgan-x4plus"


def _evaluation() -> Evaluation:
    ev = Evaluation()
    cases = []
    for photo in ("a", "b", "c"):
        cases += [(f"{photo}-noise", photo, "noise30", {**PHOTO, "sigma": 25.0}, DENOISE),
                  (f"{photo}-jpeg", photo, "jpeg10", {**PHOTO, "jpeg_q": 12}, DEBLOCK),
                  (f"{photo}-clean", photo, "clean", dict(PHOTO), PLAIN)]
    for case, photo, kind, features, best in cases:
        ev.cases.append({"case": case, "photo": photo, "op": "upscale", "kind": kind, "features": features})
        for variant in (PLAIN, DENOISE, DEBLOCK):
            ev.rows.append({"case": case, "photo": photo, "op": "upscale", "kind": kind, "variant": variant,
                            "chosen": variant, "error": None, "lpips": 0.10 if variant == best else 0.20})
        ev.rows.append({"case": case, "photo": photo, "op": "upscale", "kind": kind, "variant": "auto",
                        "chosen": PLAIN, "error": None, "lpips": 0.10 if best == PLAIN else 0.20})
    return ev


def test_summary_compares_auto_with_fixed_variants_and_the_oracle():
    report = routing.summary(_evaluation())
    o = report["overall"]
    assert report["cases"] == 9 and report["photos"] == 3
    assert o["oracle"] == 0.1 and abs(o["auto"] - (0.1 + 0.2 + 0.2) / 3) < 1e-4
    assert o["auto_picked_best"] == 3
    # every kind has one best variant here, so knowing the kind reaches the oracle
    assert o["kind_oracle"] == 0.1 and o["kind_best"] == {"clean": PLAIN, "jpeg10": DEBLOCK, "noise30": DENOISE}
    assert report["confusion"]["noise30"] == {f"{PLAIN} -> {DENOISE}": 3}
    assert "oracle" in routing.format_summary(report)


def test_fit_finds_thresholds_and_models_that_reach_the_oracle():
    fit = routing.fit_thresholds(_evaluation())
    assert fit["in_sample_lpips"] == 0.1 and fit["leave_one_photo_out_lpips"] == 0.1
    t, models = fit["thresholds"], fit["models"]
    assert 12 <= t["heavy_jpeg_q"] or 12 <= t["medium_jpeg_q"]
    assert models.get("photo-content") == PLAIN
    assert DENOISE in models.values() and DEBLOCK in models.values()


def test_kind_oracle_is_what_knowing_the_kind_alone_reaches():
    """Two photos of one kind that want different variants: the per-case
    oracle picks both, the kind oracle only the better variant for the kind."""
    ev = Evaluation()
    lpips = {"a": {DENOISE: 0.1, PLAIN: 0.4}, "b": {DENOISE: 0.2, PLAIN: 0.1}}
    for photo, scores in lpips.items():
        case = f"{photo}-noise"
        ev.cases.append({"case": case, "photo": photo, "op": "upscale", "kind": "noise15", "features": dict(PHOTO)})
        for variant, lp in scores.items():
            ev.rows.append({"case": case, "photo": photo, "op": "upscale", "kind": "noise15", "variant": variant,
                            "chosen": variant, "error": None, "lpips": lp})
        ev.rows.append({"case": case, "photo": photo, "op": "upscale", "kind": "noise15", "variant": "auto",
                        "chosen": PLAIN, "error": None, "lpips": 0.4 if photo == "a" else 0.1})
    o = routing.summary(ev)["overall"]
    assert o["oracle"] == 0.1 and o["kind_best"] == {"noise15": DENOISE} and abs(o["kind_oracle"] - 0.15) < 1e-9
    assert o["kind_oracle_vs_oracle"] == 0.5 and "kind oracle" in routing.format_summary(routing.summary(ev))
