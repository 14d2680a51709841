"""Access and limits of a real ``retouch serve``: the bearer token, closed by
default, body size (declared and streamed), request timeout and the
concurrency gate, each answered with a 4xx/5xx JSON error of one line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import pytest
from PIL import Image as PILImage

from tests.api.apilib import ROOT, server_env

EXAMPLES = ROOT / "examples"
COFFEE = EXAMPLES / "coffee-label.jpg"
TOKEN = "t0ken-for-tests-" + "x" * 16


def _error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


@pytest.fixture(scope="module")
def strict(start_api):
    """A server with a token, a 1 MiB body limit and a 2 s request timeout."""
    return start_api("--max-body-mb", "1", "--request-timeout", "2", "--concurrency", "1",
                     env={"RETOUCH_API_TOKEN": TOKEN})


def test_token_required_and_checked(strict):
    files = {"image": ("coffee-label.jpg", COFFEE.read_bytes())}
    with strict.client() as c:
        missing = c.post("/v1/inpaint", files=files)
        assert "missing bearer token" in _error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "wrong bearer token" in _error(c.post("/v1/inpaint", files=files,
                                                    headers={"Authorization": "Bearer nope"}), 401)
        assert _error(c.post("/v1/inpaint", files=files, headers={"Authorization": f"Basic {TOKEN}"}), 401)
        ok = c.post("/v1/upscale", files=files, headers={"Authorization": f"Bearer {TOKEN}"},
                    data={"strategy": "lanczos", "target_scale": "1"})   # fast: well inside the 2 s timeout
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
        # probes and scrapes stay open
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").status_code == 200
    # the token never appears in the server's output
    assert TOKEN not in strict.output()


def test_oversized_body_is_refused_declared_or_streamed(strict):
    big = b"\xff" * (1024 * 1024 + 1)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with strict.client() as c:
        declared = c.post("/v1/inpaint", files={"image": ("big.jpg", big)}, headers=auth)
        assert "larger than 1 MiB" in _error(declared, 413)

        def chunks():  # a well-formed multipart upload of 1.25 MiB, without Content-Length
            yield (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
                   b"Content-Type: image/jpeg\r\n\r\n")
            for _ in range(20):
                yield b"\x00" * 65536
            yield b"\r\n--xyz--\r\n"

        streamed = c.post("/v1/inpaint", content=chunks(),
                          headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"})
        assert "larger than 1 MiB" in _error(streamed, 413)
        # the server is still fine after both
        assert c.post("/v1/upscale", files={"image": ("c.jpg", COFFEE.read_bytes())},
                      data={"strategy": "lanczos", "target_scale": "1"}, headers=auth).status_code == 200


def test_timeout_gives_504_and_a_full_gate_503(strict, tmp_path):
    """concurrency 1, timeout 2 s: a slow image (Real-ESRGAN x4 on CPU) gets
    504 at 2 s; a request waiting behind it gets 503 with Retry-After; once the
    slow computation has finished in its thread, the server answers again."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    crop = tmp_path / "crop.png"   # 160 px: x4 is 0.4 MP out, seconds on a CPU, well over 2 s
    PILImage.open(COFFEE).crop((300, 120, 460, 280)).save(crop)
    slow = {"image": ("crop.png", crop.read_bytes())}
    results = {}

    def call(name, delay):
        time.sleep(delay)
        with strict.client() as c:
            started = time.monotonic()
            results[name] = (c.post("/v1/upscale", files=slow, headers=auth,
                                    data={"strategy": "realesrgan-x4plus", "target_scale": "4"}),
                             time.monotonic() - started)

    threads = [threading.Thread(target=call, args=("first", 0)), threading.Thread(target=call, args=("second", 0.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # whichever got the slot first times out; the other one finds the slot taken
    by_status = {r.status_code: (r, seconds) for r, seconds in results.values()}
    assert set(by_status) == {503, 504}, {k: r.text for k, (r, _) in by_status.items()}
    slow, slow_s = by_status[504]
    busy, _ = by_status[503]
    assert "took longer than 2s" in _error(slow, 504)
    assert 1.5 < slow_s < 10
    assert "busy" in _error(busy, 503) and int(busy.headers["retry-after"]) >= 1
    # the overrun finishes in the background and frees the slot
    deadline = time.monotonic() + 300
    with strict.client() as c:
        while True:
            r = c.post("/v1/upscale", files={"image": ("c.jpg", COFFEE.read_bytes())}, headers=auth,
                       data={"strategy": "lanczos", "target_scale": "1"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            # busy while the overrun computes; or 504 when the slot came free just before this
            # request's own deadline (the timeout counts the wait for a slot too)
            assert r.status_code in (503, 504), r.text
            time.sleep(2)
    assert r.status_code == 200


def test_no_token_means_loopback_only(tmp_path):
    """Listening beyond loopback without a token is refused at start, with one line."""
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                          env=server_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("retouch serve: listening on address 0.0.0.0 needs an API token (set "
                                   "RETOUCH_API_TOKEN); without one the API serves loopback clients only: use "
                                   "--host 127.0.0.1")


def test_bad_settings_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "serve", "--port", "0",
                           "--concurrency", "0"], env=server_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "api_concurrency 0" in proc.stderr

