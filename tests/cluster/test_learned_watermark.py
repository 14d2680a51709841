"""``retouch submit --watermark learned`` on real Redis and S3 (SeaweedFS):
the workers learn the shared mark from a sample of the prefix (a chord), every
image's chain lifts it with that template, and the result matches the truth
(alpha) and ``retouch run --watermark learned`` on the same files (outputs
byte for byte). A sample too small to learn from gets one line and the job
goes on without the mark."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from clusterlib import retouch
from tests.test_watermark import collection, shared_mark, telea
from worker.quality import metrics

pytestmark = pytest.mark.cluster

PLAN = ("--inpaint", "telea")


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.rint(rgb[..., ::-1] * 255).astype(np.uint8))[1].tobytes()


def _rgb(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255


def _get(s3, url: str) -> bytes:
    bucket, key = url[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _submit(env: dict, bucket: str, *extra: str):
    proc = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", *PLAN, "--watermark", "learned",
                   "--wait", "--learn-timeout", "300", *extra, env=env, timeout=600, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    job = proc.stdout.strip().splitlines()[0]
    return job, proc


def test_submit_learns_the_shared_mark_and_lifts_it_as_run_does(cluster_env, start_workers, s3, bucket, tmp_path):
    clean = collection(24)
    observed, truth = shared_mark(clean)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, o in enumerate(observed):
        (folder / f"{i:02d}.png").write_bytes(_png(o))
        s3.put_object(Bucket=bucket, Key=f"in/{i:02d}.png", Body=_png(o))
    local = retouch("run", str(folder), "--out", str(tmp_path / "out"), *PLAN, "--watermark", "learned",
                    "--save-masks", "--no-progress", env=cluster_env, timeout=600)
    assert "learned the shared watermark from 24 images" in local.stderr

    workers = start_workers(cluster_env, "--cpu")
    workers.wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])
    job, proc = _submit(cluster_env, bucket)
    assert "learning the shared mark from 24 sampled images" in proc.stderr
    assert "learned from 24 images -> s3://" in proc.stderr, proc.stderr

    summary = json.loads(_get(s3, f"s3://{bucket}/out/_retouch/jobs/{job}/summary.json"))
    assert (summary["ok"], summary["failed"]) == (24, 0), summary
    learned = summary["watermark"]
    assert learned["template"].startswith(f"s3://{bucket}/out/_retouch/watermarks/")
    assert summary["plan"]["watermarks"] == [learned["template"]]
    # the template and its JSON: the alpha map against the true one, in the collection's frame
    info = json.loads(_get(s3, learned["json"]))
    assert len(info["images"]) == 24 and all(i.startswith(f"s3://{bucket}/in/") for i in info["images"])
    box = info["box"]
    estimate = np.zeros_like(truth)
    estimate[box["y0"]:box["y1"], box["x0"]:box["x1"]] = np.asarray(info["alpha"], np.float32)
    support = truth > 0.02
    mae = float(np.abs(estimate - truth)[support].mean())
    assert mae <= 0.05, mae
    # the shares the chord's header stored are gone once the body solved
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"out/_retouch/jobs/{job}/learn/").get("KeyCount", 0) == 0
    rgba = cv2.imdecode(np.frombuffer(_get(s3, learned["template"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (box["y1"] - box["y0"], box["x1"] - box["x0"], 4)
    # the same learning as `retouch run --watermark learned` on the same files
    ran = json.loads((tmp_path / "out" / "retouch-watermark.json").read_text())
    assert (ran["box"], ran["alpha"], ran["colour"]) == (info["box"], info["alpha"], info["colour"])
    assert (tmp_path / "out" / "retouch-watermark.png").read_bytes() == _get(s3, learned["template"])
    # the outputs: recall of the true mark, PSNR against the clean photos, as run's
    manifest = {line["key"]: line for line in map(json.loads, _get(s3, summary["manifest"]).decode().splitlines())}
    recalls, psnr, baseline, same = [], [], [], 0
    for i, (c, o) in enumerate(zip(clean, observed)):
        line = manifest[f"in/{i:02d}.png"]
        assert line["status"] == "ok", line
        record = json.loads(_get(s3, line["record"]))
        assert len(record["watermarks"]["marks"]) == 1 and record["watermarks"]["marks"][0]["template"] == \
            learned["template"]
        with np.load(io.BytesIO(_get(s3, line["artifacts"]["mask"])), allow_pickle=False) as arrays:
            region = arrays["array"] > 0
        recalls.append((region & support).sum() / support.sum())
        out = _get(s3, line["output"])
        same += out == (tmp_path / "out" / f"{i:02d}.png").read_bytes()
        psnr.append(metrics.psnr(c, _rgb(out), support))
        baseline.append(metrics.psnr(c, telea(o.astype(np.float32), support), support))
    print(f"learned alpha MAE {mae:.4f}; recall min {min(recalls):.3f}; PSNR in the mark {np.mean(psnr):.2f} dB "
          f"(Telea given the true mask {np.mean(baseline):.2f} dB); {same}/24 outputs byte-identical to run's")
    assert same == 24
    assert min(recalls) >= 0.95
    assert np.mean(psnr) > np.mean(baseline) + 1

    # a re-submit samples the same keys, learns the same template: same fingerprint, every image skipped
    again, _ = _submit(cluster_env, bucket)
    resummary = json.loads(_get(s3, f"s3://{bucket}/out/_retouch/jobs/{again}/summary.json"))
    assert resummary["watermark"]["template"] == learned["template"] and resummary["skipped"] == 24, resummary


@pytest.mark.parametrize("images, cause", [(shared_mark(collection(5))[0], "needs at least 8"),
                                           (collection(20), "share no visible mark")], ids=["too-small", "unmarked"])
def test_too_small_or_varied_a_sample_gets_one_line_and_the_job_goes_on(images, cause, cluster_env, start_workers,
                                                                        s3, bucket):
    for i, o in enumerate(images):
        s3.put_object(Bucket=bucket, Key=f"in/{i:02d}.png", Body=_png(o))
    workers = start_workers(cluster_env, "--cpu")
    workers.wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])
    job, proc = _submit(cluster_env, bucket)
    lines = [line for line in proc.stderr.splitlines() if "going on without it" in line]
    assert len(lines) == 1 and cause in lines[0], proc.stderr
    assert lines[0].startswith(f"retouch submit: --watermark learned: s3://{bucket}/in (a sample of {len(images)} ")
    summary = json.loads(_get(s3, f"s3://{bucket}/out/_retouch/jobs/{job}/summary.json"))
    assert (summary["ok"], summary["failed"]) == (len(images), 0) and summary["plan"]["watermarks"] == []
    assert "watermark" not in summary
    for i in range(len(images)):
        assert _rgb(_get(s3, f"s3://{bucket}/out/{i:02d}.png")).shape == (128, 128, 3)


def test_no_worker_to_learn_is_one_line_and_nothing_is_enqueued(cluster_env, s3, bucket):
    s3.put_object(Bucket=bucket, Key="in/00.png", Body=_png(collection(1)[0]))
    proc = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--watermark", "learned",
                   "--learn-timeout", "2", env=cluster_env, check=False, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("retouch submit: --watermark learned: no learned watermark after 2s (0/1 sampled "
                           "images read): are workers consuming the cpu queue?"), proc.stderr
    assert "Traceback" not in proc.stderr
