"""The synchronous endpoints of a real ``retouch serve``, called as the seed's
curl examples do, give the bytes ``retouch run`` writes with the same
settings; the seed's three-step flow (detect-mask -> inpaint -> postprocess)
chained over HTTP gives them too."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from orchestration.cli import main
from tests.conftest import photo
from worker.degrade import legible, overlay_text, random_text_specs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COFFEE = EXAMPLES / "coffee-label.jpg"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def retouch_run(tmp: Path, source: Path, *flags: str) -> tuple[bytes, dict, Path]:
    """``retouch run SOURCE --out OUT FLAGS`` in process: (output bytes, sidecar, out dir)."""
    out = tmp / ("run-" + _sha(" ".join((str(source),) + flags).encode())[:8])
    assert main(["run", str(source), "--out", str(out), "--no-progress", *flags]) == 0
    produced = [p for p in out.iterdir() if p.suffix not in (".json", ".jsonl") and ".confidence" not in p.name
                and ".mask" not in p.name]
    assert len(produced) == 1, produced
    return produced[0].read_bytes(), json.loads(Path(str(produced[0]) + ".json").read_text()), out


def _record(response) -> dict:
    return json.loads(response.headers["x-retouch-record"])


def _rgba_png(tmp: Path) -> Path:
    """A hard case: a photo with text and a real alpha channel (a gradient and a hole)."""
    clean = photo("chelsea")
    specs = random_text_specs(np.random.default_rng(5), clean.shape[1], clean.shape[0], lines=2, max_angle=5,
                              min_opacity=0.9)
    degraded, _ = overlay_text(clean, legible(clean, specs))
    h, w = degraded.shape[:2]
    alpha = np.tile(np.linspace(80, 255, w, dtype=np.float32), (h, 1))
    alpha[100:140, 100:140] = 0
    rgba = np.dstack([(np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8), alpha.astype(np.uint8)])
    path = tmp / "chelsea-alpha.png"
    PILImage.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-images")


@pytest.fixture(scope="module")
def coffee_run(work):
    """``retouch run examples/coffee-label.jpg --save-masks`` (default settings)."""
    return retouch_run(work, COFFEE, "--save-masks")


@pytest.fixture(scope="module")
def mask_doc(api, coffee_run):
    with api.client() as c:
        r = c.post("/v1/detect-mask", files={"image": ("coffee-label.jpg", COFFEE.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.content


def test_detect_mask_gives_the_maps_and_stats_of_retouch_run(api, coffee_run, mask_doc):
    data, sidecar, out = coffee_run
    doc = json.loads(mask_doc)
    assert doc["format"] == "retouch-mask/1"
    assert doc["image"] == {"name": "coffee-label.jpg", "sha256": _sha(COFFEE.read_bytes()), "width": 600,
                            "height": 400}
    # the 16-bit PNGs are the files `retouch run --save-masks` writes, byte for byte
    assert base64.b64decode(doc["confidence_png"]) == (out / "coffee-label.jpg.confidence.png").read_bytes()
    assert base64.b64decode(doc["mask_png"]) == (out / "coffee-label.jpg.mask.png").read_bytes()
    assert doc["stats"] == sidecar["mask"] and doc["stats"]["regions"] >= 1
    assert doc["record"]["fingerprint"] == sidecar["fingerprint"]
    # one map alone, as a PNG, for curl -o mask.png
    with api.client() as c:
        r = c.post("/v1/detect-mask", params={"output": "mask"},
                   files={"image": ("coffee-label.jpg", COFFEE.read_bytes())})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (out / "coffee-label.jpg.mask.png").read_bytes()
    assert _record(r)["mask"] == sidecar["mask"]


def test_inpaint_is_byte_identical_to_retouch_run(api, coffee_run):
    data, sidecar, _ = coffee_run
    with api.client() as c:
        r = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content == data
    record = _record(r)
    assert record["fingerprint"] == sidecar["fingerprint"] == r.headers["x-retouch-fingerprint"]
    assert record["decisions"] == sidecar["decisions"] and record["variants"] == sidecar["variants"]
    assert record["output"]["sha256"] == _sha(r.content) == sidecar["output"]["sha256"]
    assert r.headers["x-retouch-variants"] == ";".join(f"{k}={v}" for k, v in sidecar["variants"].items())
    assert "inpaint=" + sidecar["variants"]["inpaint"] in r.headers["x-retouch-variants"]
    assert r.headers["x-retouch-timings"].startswith("detect=")
    # the same result as JSON
    with api.client(headers={"Accept": "application/json"}) as c:
        j = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes())}).json()
    assert base64.b64decode(j["image"]) == data and j["media_type"] == "image/jpeg"
    assert j["record"]["decisions"] == sidecar["decisions"]


def test_inpaint_with_the_seed_payload_equals_the_same_flags(api, work):
    """The seed's payload (nested JSON) and form fields set the same Plan as the CLI flags."""
    data, sidecar, _ = retouch_run(work, COFFEE, "--mask-type", "binary", "--mask-sigma", "2", "--seed", "4412",
                                   "--prompt", "match surrounding sky", "--strength", "0.85")
    payload = {"image_id": "img_2026_07", "mask": {"type": "binary", "sigma": 2}, "prompt": "match surrounding sky",
               "scale": 0.85, "seed": 4412}
    with api.client() as c:
        by_payload = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes())},
                            data={"payload": json.dumps(payload)})
        by_fields = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes())},
                           data={"mask.type": "binary", "mask.sigma": "2", "seed": "4412",
                                 "prompt": "match surrounding sky", "scale": "0.85"})
        # a form field overrides the payload: seed 0 is another plan, other bytes
        overridden = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes())},
                            data={"payload": json.dumps(payload), "mask.type": "soft"})
    for r in (by_payload, by_fields):
        assert r.status_code == 200, r.text
        assert r.content == data
        record = _record(r)
        assert record["fingerprint"] == sidecar["fingerprint"] and record["seed"] == 4412
        assert record["plan"]["mask_type"] == "binary" and record["plan"]["mask_sigma"] == 2.0
        assert record["request"]["prompt"] == "match surrounding sky" and record["request"]["scale"] == 0.85
        assert record["plan"]["prompt"] == "match surrounding sky" and record["plan"]["strength"] == 0.85
        assert "unused" not in record["request"]
    assert _record(by_payload)["request"]["image_id"] == "img_2026_07"
    assert _record(overridden)["plan"]["mask_type"] == "soft" and overridden.content != data


def test_inpaint_with_a_mask_png_equals_retouch_run_masks(api, work):
    """A user mask (white = remove) replaces detection, as ``retouch run --masks DIR``."""
    masks = work / "masks"
    masks.mkdir(exist_ok=True)
    mask = np.zeros((400, 600), np.uint8)
    mask[40:90, 330:560] = 255          # a box over part of the label
    mask[300:320, 20:200] = 128         # a soft stroke (below 0.5: not filled, but kept as confidence)
    PILImage.fromarray(mask).save(masks / "coffee-label.png")
    data, sidecar, _ = retouch_run(work, COFFEE, "--masks", str(masks))
    with api.client() as c:
        r = c.post("/v1/inpaint", files={"image": ("coffee-label.jpg", COFFEE.read_bytes()),
                                         "mask": ("coffee-label.png", (masks / "coffee-label.png").read_bytes())})
    assert r.status_code == 200, r.text
    assert r.content == data
    assert _record(r)["mask"]["source"] == "user" == sidecar["mask"]["source"]


def test_seed_flow_detect_inpaint_postprocess_over_http(api, coffee_run, mask_doc):
    """curl /detect-mask -o mask.json; curl /inpaint -F mask=@mask.json; postprocess:
    every step exact, the end result is retouch run's."""
    data, sidecar, _ = coffee_run
    image = ("coffee-label.jpg", COFFEE.read_bytes())
    with api.client() as c:
        full = c.post("/v1/inpaint", files={"image": image, "mask": ("mask.json", mask_doc)})
        raw = c.post("/v1/inpaint", files={"image": image, "mask": ("mask.json", mask_doc)},
                     data={"postprocess": "false"})
        assert raw.status_code == 200, raw.text
        assert raw.headers["content-type"] == "image/tiff"
        blended = c.post("/v1/postprocess", files={"image": image, "fill": ("fill.tif", raw.content),
                                                   "mask": ("mask.json", mask_doc)})
    assert full.status_code == 200 and full.content == data            # detection skipped, same result
    assert _record(full)["decisions"] == sidecar["decisions"]
    assert "postprocess" not in _record(raw)["timings"]
    assert blended.status_code == 200, blended.text
    assert blended.content == data
    assert _record(blended)["postprocess"] == sidecar["postprocess"]


def test_mask_document_carries_its_mask_settings(api, work):
    """A mask made with mask.sigma 2 is used with sigma 2 (the plan and record
    say so, the bytes are `retouch run --mask-sigma 2`'s); asking for another
    sigma with that document is refused, not silently ignored."""
    data, sidecar, _ = retouch_run(work, COFFEE, "--mask-sigma", "2")
    image = ("coffee-label.jpg", COFFEE.read_bytes())
    with api.client() as c:
        doc = c.post("/v1/detect-mask", files={"image": image}, data={"mask.sigma": "2"}).content
        same = c.post("/v1/inpaint", files={"image": image, "mask": ("mask.json", doc)})
        other = c.post("/v1/inpaint", files={"image": image, "mask": ("mask.json", doc)}, data={"mask.sigma": "6"})
    assert same.status_code == 200, same.text
    assert same.content == data and _record(same)["fingerprint"] == sidecar["fingerprint"]
    assert _record(same)["plan"]["mask_sigma"] == 2.0
    assert other.status_code == 422 and "mask.sigma=6.0 differs from the mask document's 2.0" in other.json()["error"]


def test_rgba_png_keeps_alpha_and_matches_retouch_run(api, work):
    source = _rgba_png(work)
    data, sidecar, _ = retouch_run(work, source)
    with api.client() as c:
        r = c.post("/v1/inpaint", files={"image": (source.name, source.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.content == data
    out = PILImage.open(io.BytesIO(r.content))
    assert out.mode == "RGBA" and np.asarray(out)[120, 120, 3] == 0


def test_upscale_strategies_equal_retouch_run(api, work):
    """A named variant and the seed's "artifact-aware" strategy (retouch's
    measured choice, ``--upscale auto``) give retouch run's bytes."""
    small = work / "coffee-small.png"
    PILImage.open(COFFEE).crop((300, 150, 364, 214)).save(small)    # 64x64: a learned model runs quickly on CPU
    lanczos, _, _ = retouch_run(work, COFFEE, "--ops", "upscale", "--upscale", "lanczos", "--scale", "2")
    auto, auto_sidecar, _ = retouch_run(work, small, "--ops", "upscale", "--scale", "2")
    with api.client() as c:
        r1 = c.post("/v1/upscale", files={"image": ("coffee-label.jpg", COFFEE.read_bytes())},
                    data={"strategy": "lanczos", "target_scale": "2"})
        r2 = c.post("/v1/upscale", files={"image": ("coffee-small.png", small.read_bytes())},
                    data={"payload": json.dumps({"strategy": "artifact-aware", "target_scale": 2})})
    assert r1.status_code == 200, r1.text
    assert r1.content == lanczos and _record(r1)["output"]["width"] == 1200
    assert r2.status_code == 200, r2.text
    assert r2.content == auto
    # the router's plan: an optional pre-pass (deblock, denoise) and the upscaler, as retouch run decided
    decisions = _record(r2)["decisions"]
    assert decisions == auto_sidecar["decisions"]
    upscale = next(d for d in decisions if d["stage"] == "upscale")
    assert upscale["inputs"] and upscale["reason"]


def test_openapi_docs_and_metrics(api):
    with api.client() as c:
        docs = c.get("/docs")
        spec = c.get("/openapi.json").json()
        metrics = c.get("/metrics").text
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {"/v1/detect-mask", "/v1/inpaint", "/v1/upscale", "/v1/postprocess", "/v1/jobs", "/v1/jobs/{job_id}",
            "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    form = spec["components"]["schemas"]
    assert any("mask.sigma" in schema.get("properties", {}) for schema in form.values())
    # the synchronous requests above were measured: stages, selections, HTTP requests
    assert 'retouch_stage_duration_seconds_count{device="cpu",stage="detect"' in metrics
    assert 'retouch_http_requests_total{method="POST",route="/v1/inpaint",status="200"}' in metrics
    assert 'retouch_model_selections_total{reason=' in metrics
    assert "retouch_broker_up 0.0" in metrics   # no Redis for this server: said, not faked as depth 0


# --- bad input: a 4xx JSON error with one line, never a traceback --------------

def _one_line_error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "status"} and body["status"] == status
    assert "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A PNG of 11000 x 10000 pixels (110 MP, over the 100 MP guard) in a few KB."""
    buf = io.BytesIO()
    PILImage.new("1", (11000, 10000)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_images_get_one_line_422(api, bomb_png):
    truncated = COFFEE.read_bytes()[:2000]
    cases = {
        "truncated.jpg": (truncated, "truncated.jpg: truncated or corrupt"),
        "notes.txt": (b"just some text, not an image", "notes.txt: not a recognised image"),
        "empty.png": (b"", "empty.png: empty file"),
        "bomb.png": (bomb_png, "bomb.png: 11000x10000 = 110000000 pixels exceeds the limit"),
    }
    with api.client() as c:
        for name, (data, expected) in cases.items():
            for path in ("/v1/inpaint", "/v1/detect-mask", "/v1/upscale"):
                error = _one_line_error(c.post(path, files={"image": (name, data)}), 422)
                assert error.startswith(expected), (path, error)
        # a client's path in the file name is not echoed back as a path
        error = _one_line_error(c.post("/v1/inpaint", files={"image": ("../../etc/passwd", b"x")}), 422)
        assert error.startswith("passwd: ")


def test_bad_masks_and_options_get_one_line_422(api, mask_doc, tmp_path):
    image = ("coffee-label.jpg", COFFEE.read_bytes())
    other = tmp_path / "other.png"
    PILImage.open(COFFEE).save(other)                       # same pixels, other file: another sha256
    small_mask = io.BytesIO()
    PILImage.new("L", (60, 40), 255).save(small_mask, "PNG")
    doc = json.loads(mask_doc)
    tampered = dict(doc, trace={**doc["trace"], "details": {**doc["trace"]["details"],
                                                              "mask": {"coverage": "lots"}}})
    cases = [
        ({"image": image, "mask": ("m.png", small_mask.getvalue())}, {}, "m.png: mask is 60x40 but the image"),
        ({"image": ("other.png", other.read_bytes()), "mask": ("mask.json", mask_doc)}, {},
         "mask.json: made for another image (coffee-label.jpg"),
        ({"image": image, "mask": ("mask.json", b'{"format": "retouch-mask/1"}')}, {},
         "mask.json: not a retouch mask document"),
        ({"image": image, "mask": ("mask.json", json.dumps(tampered).encode())}, {},
         "mask.json: mask statistic coverage='lots'"),
        ({"image": image}, {"inpaint": "nope"}, "unknown inpaint variant"),
        ({"image": image}, {"mask.sigma": "wide"}, "invalid request: mask.sigma"),
        ({"image": image}, {"payload": '{"mask": {"sigmaa": 3}}'}, "invalid options: mask.sigmaa"),
        ({"image": image}, {"payload": "{not json"}, "payload is not JSON"),
        ({"image": image}, {"format": "gif"}, "coffee-label.jpg: cannot write format GIF"),
        ({}, {"seed": "1"}, "invalid request: image"),
    ]
    with api.client() as c:
        for files, data, expected in cases:
            error = _one_line_error(c.post("/v1/inpaint", files=files, data=data), 422)
            assert expected.lower() in error.lower(), (expected, error)
        error = _one_line_error(c.post("/v1/upscale", files={"image": image}, data={"strategy": "nope"}), 422)
        assert "nope" in error
        error = _one_line_error(c.post("/v1/postprocess", files={"image": image, "fill": ("f.png", b"\x89PNG..")}),
                                422)
        assert "mask" in error
        # the broker is not running for this server: jobs say so with 503, not a traceback
        _one_line_error(c.get("/v1/jobs/abc123"), 503)


def test_forwarded_remote_client_is_refused_without_a_token(api):
    """No token: loopback clients only. A local proxy forwarding a remote client
    (X-Forwarded-For from 127.0.0.1, which uvicorn trusts) is not loopback."""
    with api.client() as c:
        error = _one_line_error(c.post("/v1/inpaint", files={"image": ("a.jpg", b"x")},
                                       headers={"X-Forwarded-For": "203.0.113.9"}), 403)
        assert "203.0.113.9" in error and "loopback" in error
        assert c.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200

