"""The distributed pipeline end to end, on real Redis and real S3 (SeaweedFS):
submit a prefix of real photos, two per-GPU workers (pinning simulated on the
CPU) restore them, the manifest is complete, originals are untouched, a
re-submit reprocesses nothing, and a worker killed mid-task loses nothing."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from clusterlib import retouch, wait_job
from orchestration.cluster import free_port
from orchestration.jobs import current_task_key
from worker.pipeline import graph
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _upload(s3, bucket: str, prefix: str, files: dict[str, bytes]) -> dict[str, str]:
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    return {f"{prefix}/{name}": _sha(data) for name, data in files.items()}


def _manifest(s3, url: str) -> list[dict]:
    bucket, key = url[5:].split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def _versions(s3, bucket: str, keys) -> dict[str, int]:
    """Object versions per key in a versioned bucket: 1 means written once
    (the proof of "written once" is S3's own history, not a count in Redis)."""
    counts = dict.fromkeys(keys, 0)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            if v["Key"] in counts:
                counts[v["Key"]] += 1
    return counts


def _versioned(s3, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def _job_hash(env: dict, job: str, what: str) -> dict[str, int]:
    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    return {k.decode(): int(v) for k, v in r.hgetall(f"retouch:job:{job}:{what}").items()}


def _status(env: dict, job: str) -> dict:
    return json.loads(retouch("status", job, "--json", env=env).stdout)


def _metric(port: int, name: str) -> dict[tuple, float]:
    """Samples of one metric from the workers' /metrics endpoint, by label values."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {tuple(sorted(s.labels.items())): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


def _images_metric(port: int) -> dict[str, float]:
    return {dict(k)["status"]: v for k, v in _metric(port, "retouch_images_total").items()}


def test_submit_two_gpu_queues_manifest_and_resubmit(cluster_env, bucket, s3, start_workers, archive_photos,
                                                     tmp_path):
    from PIL import Image as PILImage

    photos = archive_photos(30, seed=1)
    _versioned(s3, bucket)
    originals = _upload(s3, bucket, "raw", photos)
    s3.put_object(Bucket=bucket, Key="raw/broken/truncated.jpg", Body=photos["astronaut-000.jpg"][:300])
    originals["raw/broken/truncated.jpg"] = _sha(photos["astronaut-000.jpg"][:300])
    s3.put_object(Bucket=bucket, Key="raw/notes.txt", Body=b"not an image, not listed")

    env = {**cluster_env, "RETOUCH_SIMULATE_GPUS": "1"}
    metrics_port = free_port()
    workers = start_workers(env, "--gpus", "0,1", "--cpu-concurrency", "1", "--metrics-port", str(metrics_port))
    workers.wait_ready(["gpu.0", "gpu.1", "cpu"], env["RETOUCH_REDIS_URL"])
    gpu_pids = {q: workers.child(q).pid for q in ("gpu.0", "gpu.1")}
    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    announced = [json.loads(r.get(k)) for k in r.scan_iter("retouch:queues:*")]
    assert announced == [["cpu", "gpu.0", "gpu.1"]]  # what submit spreads heavy stages over
    assert workers.child("gpu.0").environ()["CUDA_VISIBLE_DEVICES"] == "0"
    assert workers.child("gpu.1").environ()["CUDA_VISIBLE_DEVICES"] == "1"
    # the children share one multiprocess metrics folder per port, under the state dir
    metrics_dir = Path(env["RETOUCH_STATE_DIR"]) / f"metrics-{metrics_port}"
    assert workers.child("gpu.0").environ()["PROMETHEUS_MULTIPROC_DIR"] == str(metrics_dir)

    # the output prefix may not overlap the input prefix
    refused = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/raw/out", env=env, check=False)
    assert refused.returncode == 2 and "overlaps" in refused.stderr

    job = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/restored", "--ops", "remove-text",
                  "--batch-size", "8", env=env).stdout.strip()
    last = wait_job(env, job, timeout=180)
    assert "30 done, 1 failed, 0 skipped" in last, last

    st = _status(env, job)
    assert (st["done"], st["failed"], st["skipped"], st["queued"], st["running"]) == (30, 1, 0, 0, 0)
    assert _images_metric(metrics_port) == {"ok": 30, "failed": 1, "skipped": 0}  # metrics agree with the job
    assert st["finished"] and st["throughput"] > 0
    lines = _manifest(s3, st["manifest"])
    assert sorted(line["key"] for line in lines) == sorted(originals)  # one line per image, .txt not listed
    by_key = {line["key"]: line for line in lines}

    bad = by_key.pop("raw/broken/truncated.jpg")
    assert bad["status"] == "failed" and bad["output"] is None
    assert bad["error"].startswith(f"s3://{bucket}/raw/broken/truncated.jpg: ")

    used = {"gpu.0": 0, "gpu.1": 0}
    for key, line in by_key.items():
        assert line["status"] == "ok" and line["error"] is None, line
        queue = line["queue"]
        used[queue] += 1
        # heavy stages ran on the worker of the image's GPU queue, light ones on the cpu worker
        assert line["workers"]["detect"].startswith(queue.replace(".", "")), line["workers"]
        assert line["workers"]["inpaint"] == line["workers"]["detect"]
        assert line["workers"]["postprocess"].startswith("cpu")
        assert set(line["timings"]) >= {"detect", "inpaint", "postprocess"} and line["variants"]["inpaint"]
        out_key = line["output"].split("/", 3)[3]
        assert out_key == key.replace("raw/", "restored/", 1)
        obj = s3.get_object(Bucket=bucket, Key=out_key)
        data = obj["Body"].read()
        assert PILImage.open(__import__("io").BytesIO(data)).size == (256, 256)
        meta = obj["Metadata"]
        assert meta["retouch-ops"] == "remove-text" and meta["retouch-seed"] == "0"
        assert len(meta["retouch-fingerprint"]) == 16 and "inpaint=" in meta["retouch-models"]
        record = json.loads(s3.get_object(Bucket=bucket, Key=out_key + ".json")["Body"].read())
        assert record["output"]["sha256"] == _sha(data) and record["input"]["sha256"] == originals[key]
        assert record["fingerprint"] == meta["retouch-fingerprint"]
        conf = s3.get_object(Bucket=bucket, Key=line["artifacts"]["confidence"].split("/", 3)[3])["Body"].read()
        with np.load(__import__("io").BytesIO(conf), allow_pickle=False) as arrays:
            assert arrays["array"].shape == (256, 256) and arrays["array"].dtype == np.float32
    assert used["gpu.0"] == 15 and used["gpu.1"] == 15

    # originals byte-identical
    for key, digest in originals.items():
        assert _sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == digest
    # models loaded once per worker process: the detector twice in all (gpu.0, gpu.1), never on cpu
    assert {q: workers.child(q).pid for q in ("gpu.0", "gpu.1")} == gpu_pids
    loads = _metric(metrics_port, "retouch_model_load_seconds_count")
    assert {dict(k)["kind"]: v for k, v in loads.items() if v} == {"detector": 2}

    # the distributed output equals the embedded run's, byte for byte
    sample = "raw/coffee-002.jpg"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "coffee-002.jpg").write_bytes(photos["coffee-002.jpg"])
    retouch("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--ops", "remove-text", "--no-progress",
            env=env)
    embedded = (tmp_path / "out" / "coffee-002.jpg").read_bytes()
    assert s3.get_object(Bucket=bucket, Key="restored/coffee-002.jpg")["Body"].read() == embedded, sample

    outputs = [k.replace("raw/", "restored/", 1) for k in by_key]
    assert _versions(s3, bucket, outputs) == {k: 1 for k in outputs}        # each output written once
    etags = {k: s3.head_object(Bucket=bucket, Key=k.replace("raw/", "restored/", 1))["ETag"] for k in by_key}

    # re-submitting the same prefix with the same settings reprocesses nothing
    again = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/restored", "--ops", "remove-text",
                    "--batch-size", "8", env=env).stdout.strip()
    last = wait_job(env, again, timeout=60)
    assert "0 done, 1 failed, 30 skipped" in last, last
    assert _versions(s3, bucket, outputs) == {k: 1 for k in outputs}        # and not again
    lines = _manifest(s3, _status(env, again)["manifest"])
    assert sorted(line["status"] for line in lines) == ["failed"] + ["skipped"] * 30
    assert _images_metric(metrics_port) == {"ok": 30, "failed": 2, "skipped": 30}
    # skipped in the first task (detect and inpaint run in one task on the gpu queue), before any compute
    first = "+".join(s.name for s in graph.segments(graph.stages_for(Plan(ops=["remove-text"])))[0])
    assert first.startswith("detect+") and first.endswith("+inpaint")
    assert all(line["task_seconds"].keys() <= {first} and not line["timings"] for line in lines)
    assert {k: s3.head_object(Bucket=bucket, Key=k.replace("raw/", "restored/", 1))["ETag"] for k in by_key} == etags


def _kill_mid_task(workers, r, queue: str, timeout: float = 60):
    """SIGKILL the worker of ``queue`` while it is inside a detect or inpaint
    task; returns (the killed process, what it was doing)."""
    victim = workers.child(queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in r.scan_iter(f"retouch:worker:{queue.replace('.', '')}.*:current"):
            current = r.get(key)
            if current and json.loads(current)["task"] in ("detect", "inpaint"):
                victim.send_signal(signal.SIGKILL)
                host = key.decode()[len("retouch:worker:"):-len(":current")]
                return victim, {**json.loads(current), "host": host}
        time.sleep(0.02)
    raise AssertionError(f"{queue} worker never seen inside a task")


def test_worker_killed_mid_task_job_completes_exactly_once(cluster_env, bucket, s3, start_workers, archive_photos):
    photos = archive_photos(12, seed=2)
    _versioned(s3, bucket)
    originals = _upload(s3, bucket, "in", photos)
    # the default visibility timeout (2 h): the killed task comes back because the
    # supervisor puts it back, not because Redis gave up waiting for it
    env = {**cluster_env, "RETOUCH_SIMULATE_GPUS": "1", "RETOUCH_TASK_SOFT_TIME_LIMIT": "8",
           "RETOUCH_TASK_TIME_LIMIT": "10"}
    env.pop("RETOUCH_VISIBILITY_TIMEOUT", None)
    env.pop("RETOUCH_UNACKED_RESTORE_INTERVAL", None)
    metrics_port = free_port()
    workers = start_workers(env, "--gpus", "0,1", "--cpu-concurrency", "1", "--metrics-port", str(metrics_port))
    workers.wait_ready(["gpu.0", "gpu.1", "cpu"], env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "remove-text",
                  "--inpaint", "telea", "--batch-size", "4", env=env).stdout.strip()

    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    victim, killed = _kill_mid_task(workers, r, "gpu.1")
    killed_at = time.monotonic()
    # delivered again within 15 s of the death (the target)
    while not any(int(r.get(k) or 0) >= 2 for k in r.scan_iter(f"retouch:delivery:{killed['id']}:*")):
        assert time.monotonic() - killed_at < 15, "the killed task was not delivered again within 15 s"
        time.sleep(0.1)
    # the supervisor clears what the dead child was doing at once, not when the key expires
    dead = current_task_key(killed["host"])
    deadline = time.monotonic() + 5
    while r.get(dead) is not None and json.loads(r.get(dead) or "{}").get("id") == killed["id"]:
        assert time.monotonic() < deadline, "the killed worker's current task outlived it"
        time.sleep(0.05)

    last = wait_job(env, job, timeout=150)
    assert "12 done, 0 failed, 0 skipped" in last, last
    # the supervisor started a new gpu.1 worker, and the killed task was delivered again
    assert workers.child("gpu.1") is not None and workers.child("gpu.1").pid != victim.pid
    deliveries = [int(r.get(k)) for k in r.scan_iter("retouch:delivery:*")]
    assert max(deliveries) == 2 and deliveries.count(2) >= 1

    lines = _manifest(s3, _status(env, job)["manifest"])
    assert sorted(line["key"] for line in lines) == sorted(originals)
    assert all(line["status"] == "ok" for line in lines)
    assert _job_hash(env, job, "finishes") == {k: 1 for k in originals}  # each image finished once
    outputs = [k.replace("in/", "out/", 1) for k in originals]
    assert _versions(s3, bucket, outputs) == {k: 1 for k in outputs}     # each output written once
    assert _images_metric(metrics_port) == {"ok": 12, "failed": 0, "skipped": 0}
    assert sum(_metric(metrics_port, "retouch_task_redeliveries_total").values()) >= 1
    for key, digest in originals.items():
        assert _sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == digest


def test_redelivery_cap_fails_only_the_lost_image(cluster_env, bucket, s3, start_workers, archive_photos):
    """With max_deliveries=1, a task whose worker died is not run again: its
    image fails with the reason in the manifest, the others are done."""
    photos = archive_photos(4, seed=4)
    _upload(s3, bucket, "in", photos)
    env = {**cluster_env, "RETOUCH_SIMULATE_GPUS": "1", "RETOUCH_VISIBILITY_TIMEOUT": "10",
           "RETOUCH_UNACKED_RESTORE_INTERVAL": "1", "RETOUCH_TASK_SOFT_TIME_LIMIT": "6",
           "RETOUCH_TASK_TIME_LIMIT": "8", "RETOUCH_MAX_DELIVERIES": "1"}
    workers = start_workers(env, "--gpus", "0,1", "--cpu-concurrency", "1")
    workers.wait_ready(["gpu.0", "gpu.1", "cpu"], env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "remove-text",
                  "--inpaint", "telea", env=env).stdout.strip()
    _, killed = _kill_mid_task(workers, redis.Redis.from_url(env["RETOUCH_REDIS_URL"]), "gpu.1")
    last = wait_job(env, job, timeout=120)
    assert "3 done, 1 failed, 0 skipped" in last, last
    lines = {line["key"]: line for line in _manifest(s3, _status(env, job)["manifest"])}
    lost = lines[killed["image"]]
    assert lost["status"] == "failed" and lost["output"] is None
    # the task ran the killed stage (its stages are named, joined by '+')
    task, _, rest = lost["error"].split(": ", 1)[1].partition(" delivered")
    assert killed["task"] in task.split("+") and rest.startswith(" 2 times") and lost["error"].startswith(f"s3://{bucket}/in/")
    assert all(line["status"] == "ok" for key, line in lines.items() if key != killed["image"])


def _huge_jpeg(photo: bytes, side: int = 3200) -> bytes:
    """A photo enlarged to ``side`` px: slow enough to cross a few-second limit."""
    import io

    import cv2
    from PIL import Image as PILImage

    big = cv2.resize(np.asarray(PILImage.open(io.BytesIO(photo))), (side, side), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    PILImage.fromarray(big).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("limit", ["soft", "hard"])
def test_time_limits_fail_only_the_slow_image(limit, cluster_env, bucket, s3, start_workers, archive_photos):
    """Solo-pool workers enforce the limits themselves. Soft: the task stops
    and its image fails. Hard: the worker is killed mid-task, restarted by its
    supervisor, and the redelivered message fails the image at once. Either
    way the chain completes, the fast image is done and the job finishes."""
    small = archive_photos(2, seed=6)
    _upload(s3, bucket, "warm", {"a.jpg": small["astronaut-000.jpg"]})
    _upload(s3, bucket, "in", {"fast.jpg": small["astronaut-000.jpg"],
                               "huge.jpg": _huge_jpeg(small["chelsea-001.jpg"])})
    # detecting text in the 10 MP image takes ~20 s here, the small one under 1 s; the first
    # task also loads the models (3-5 s on a busy 2-core machine), so the limit leaves room for it
    env = {**cluster_env, "RETOUCH_TASK_SOFT_TIME_LIMIT": "10", "RETOUCH_TASK_TIME_LIMIT": "120"}
    if limit == "hard":  # no soft limit, and a short redelivery
        env.update({"RETOUCH_TASK_SOFT_TIME_LIMIT": "0", "RETOUCH_TASK_TIME_LIMIT": "10",
                    "RETOUCH_VISIBILITY_TIMEOUT": "13", "RETOUCH_UNACKED_RESTORE_INTERVAL": "1"})
    workers = start_workers(env, "--cpu")
    workers.wait_ready(["cpu"], env["RETOUCH_REDIS_URL"])
    first_pid = workers.child("cpu").pid
    warm = retouch("submit", f"s3://{bucket}/warm", "--out", f"s3://{bucket}/warm-out", env=env).stdout.strip()
    assert "1 done" in wait_job(env, warm, timeout=60)  # the detector is loaded now
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--inpaint", "telea",
                  env=env).stdout.strip()
    last = wait_job(env, job, timeout=120)
    assert "1 done, 1 failed" in last, last
    lines = {line["key"]: line for line in _manifest(s3, _status(env, job)["manifest"])}
    assert lines["in/fast.jpg"]["status"] == "ok"
    assert lines["in/huge.jpg"]["status"] == "failed"
    assert f"{limit} time limit (10s)" in lines["in/huge.jpg"]["error"], lines["in/huge.jpg"]["error"]
    assert (workers.child("cpu").pid != first_pid) == (limit == "hard")
