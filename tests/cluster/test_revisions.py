"""Revisions as a user meets them, on real servers (redis-server, weed mini
with a versioned bucket, a `retouch worker`): process images with two plans,
replace the model one plan uses (`retouch models add --replace`), then
`retouch status s3://OUT --stale` names exactly the outputs that used it,
`retouch reprocess --only-stale` redoes exactly those (each now has two
versions, the manifest lists previous and new fingerprints), a repeat finds
nothing stale, and `retouch rollback` brings the first version back byte for
byte."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from safetensors.torch import load_file, save_file

from clusterlib import retouch, wait_job

pytestmark = pytest.mark.cluster

MODEL = "/root/.cache/retouch/models/realesr-animevideov3.safetensors"  # SRVGGNet compact, 2.5 MB


def _models(tmp_path):
    """Two versions of a small upscaler: the original and one with perturbed weights."""
    src = os.path.join(os.environ.get("RETOUCH_MODEL_DIR", ""), "realesr-animevideov3.safetensors")
    if not os.path.isfile(src):
        src = MODEL
    if not os.path.isfile(src):
        pytest.skip("realesr-animevideov3.safetensors not provisioned (run `make models`)")
    state = load_file(src)
    v1, v2 = tmp_path / "v1" / "tiny-up.safetensors", tmp_path / "v2" / "tiny-up.safetensors"
    v1.parent.mkdir()
    v2.parent.mkdir()
    save_file(state, str(v1))
    state["body.0.weight"] = state["body.0.weight"] * 1.05
    save_file(state, str(v2))
    return v1, v2


def _upload(s3, bucket, prefix, photos):
    for name, data in photos.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)


def _manifest(s3, url):
    bucket, key = url[5:].split("/", 1)
    return [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()]


def _versions(s3, bucket, key):
    return [v for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]


def _outputs(s3, bucket, prefix):
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
    return sorted(k for k in keys if not k.endswith(".json") and "/_retouch/" not in k)


def test_replace_model_stale_reprocess_history_rollback(cluster_env, bucket, s3, start_workers, archive_photos,
                                                       tmp_path):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = tmp_path / "store"
    env = {**cluster_env, "RETOUCH_MODEL_DIR": str(store)}
    v1, v2 = _models(tmp_path)
    assert "added tiny-up" in retouch("models", "add", str(v1), "--licence", "test", env=env).stdout
    photos = archive_photos(8, seed=21, size=64)
    names = sorted(photos)
    learned, plain = names[:4], names[4:]
    _upload(s3, bucket, "in/a", {n: photos[n] for n in learned})
    _upload(s3, bucket, "in/b", {n: photos[n] for n in plain})
    workers = start_workers(env, "--cpu")
    workers.wait_ready(["cpu"], env["RETOUCH_REDIS_URL"])
    first = {}
    for sub, variant in (("a", "tiny-up"), ("b", "lanczos")):
        job = retouch("submit", f"s3://{bucket}/in/{sub}", "--out", f"s3://{bucket}/out/{sub}", "--ops", "upscale",
                      "--upscale", variant, "--scale", "2", env=env).stdout.strip()
        assert "4 done, 0 failed" in wait_job(env, job, timeout=180)
    outputs = _outputs(s3, bucket, "out")
    assert len(outputs) == 8
    for key in outputs:
        first[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        record = json.loads(s3.get_object(Bucket=bucket, Key=key + ".json")["Body"].read())
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        lineage = record["lineage"]
        # the fingerprint names its parts, and the S3 metadata carries it
        assert meta["retouch-revision"] == lineage["fingerprint"]
        assert lineage["input"] == hashlib.sha256(photos[key.split("/")[-1]]).hexdigest()
        assert lineage["code"] == {"upscale": "1"}
        variant = "tiny-up" if key.startswith("out/a/") else "lanczos"
        assert set(lineage["models"]) == {variant}
        assert lineage["models"][variant] == (hashlib.sha256(v1.read_bytes()).hexdigest()
                                              if variant == "tiny-up" else "builtin")

    # nothing stale yet
    none = retouch("status", f"s3://{bucket}/out", "--stale", "--json", env=env).stdout
    assert json.loads(none)["stale"] == 0

    # replacing needs --replace; it makes exactly the outputs that used the model stale
    refused = retouch("models", "add", str(v2), "--licence", "test", env=env, check=False)
    assert refused.returncode == 2 and "pass --replace" in refused.stderr and "Traceback" not in refused.stderr
    replaced = retouch("models", "add", str(v2), "--licence", "test", "--replace", env=env).stdout
    assert "outputs it made are stale" in replaced
    report = json.loads(retouch("status", f"s3://{bucket}/out", "--stale", "--json", env=env).stdout)
    assert report["outputs"] == 8 and report["stale"] == 4
    assert list(report["causes"]) == ["model=tiny-up"]
    stale = sorted(o["output"] for o in report["causes"]["model=tiny-up"])
    assert stale == [f"s3://{bucket}/out/a/{n}" for n in learned]
    text = retouch("status", f"s3://{bucket}/out", "--stale", "--because", "model=tiny-up", env=env).stdout
    assert "4 stale" in text and "model=tiny-up: 4" in text
    assert "0 stale" in retouch("status", f"s3://{bucket}/out", "--stale", "--because", "model=lanczos",
                                env=env).stdout

    # a dry run lists, submits nothing
    dry = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--only-stale", "--dry-run",
                  env=env)
    assert sorted(line.split()[0] for line in dry.stdout.splitlines()) == [f"s3://{bucket}/in/a/{n}" for n in learned]
    assert all(len(_versions(s3, bucket, k)) == 1 for k in outputs)
    limited = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--because", "model=tiny-up",
                      "--limit", "2", "--dry-run", env=env).stdout.splitlines()
    assert len(limited) == 2 and all("model=tiny-up" in line for line in limited)
    assert retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--because", "code=upscale",
                   "--dry-run", env=env).stdout == ""
    bad = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--because", "weights",
                  "--dry-run", env=env, check=False)
    assert bad.returncode == 2 and "--because 'weights'" in bad.stderr and "Traceback" not in bad.stderr

    previous = {f"out/a/{n}": json.loads(s3.get_object(Bucket=bucket, Key=f"out/a/{n}.json")["Body"].read())
                ["lineage"]["fingerprint"] for n in learned}
    jobs = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--only-stale",
                   env=env).stdout.split()
    assert len(jobs) == 1
    assert "4 done, 0 failed" in wait_job(env, jobs[0], timeout=180)
    status = json.loads(retouch("status", jobs[0], "--json", env=env).stdout)
    lines = _manifest(s3, status["manifest"])
    assert sorted(line["key"] for line in lines) == [f"in/a/{n}" for n in learned]
    for line in lines:
        out_key = "out/a/" + line["key"].split("/")[-1]
        assert line["previous_fingerprint"] == previous[out_key]
        assert line["fingerprint"] and line["fingerprint"] != line["previous_fingerprint"]
        meta = s3.head_object(Bucket=bucket, Key=out_key)["Metadata"]
        assert meta["retouch-revision"] == line["fingerprint"] and meta["retouch-job"] == jobs[0]
    for key in outputs:  # exactly the stale ones have a second version, and it differs
        versions = _versions(s3, bucket, key)
        assert len(versions) == (2 if key.startswith("out/a/") else 1), (key, versions)
        now = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (now != first[key]) == key.startswith("out/a/")
        if key.startswith("out/a/"):
            assert len(_versions(s3, bucket, key + ".json")) == 2  # the record is versioned with it
    assert json.loads(retouch("status", f"s3://{bucket}/out", "--stale", "--json", env=env).stdout)["stale"] == 0
    again = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--only-stale", env=env)
    assert again.stdout.strip() == "" and "0 selected" in again.stderr

    # history lists both revisions; rollback copies the first back on top, byte for byte
    key = f"out/a/{learned[0]}"
    rows = json.loads(retouch("history", f"s3://{bucket}/{key}", "--json", env=env).stdout)
    assert len(rows) == 2 and rows[0]["latest"] and rows[0]["job"] == jobs[0]
    assert rows[1]["fingerprint"] == previous[key] and "upscale=tiny-up" in rows[1]["models"]
    assert "tiny-up" in retouch("history", f"s3://{bucket}/{key}", env=env).stdout
    retouch("rollback", f"s3://{bucket}/{key}", "--to", rows[1]["version"], env=env)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == first[key]
    assert len(_versions(s3, bucket, key)) == 3
    record = json.loads(s3.get_object(Bucket=bucket, Key=key + ".json")["Body"].read())
    assert record["lineage"]["fingerprint"] == previous[key]   # its record came back with it
    # the rolled-back output is stale again (made by the replaced weights)
    report = json.loads(retouch("status", f"s3://{bucket}/out", "--stale", "--json", env=env).stdout)
    assert [o["output"] for o in report["causes"]["model=tiny-up"]] == [f"s3://{bucket}/{key}"]
    bad = retouch("rollback", f"s3://{bucket}/{key}", "--to", "nosuchversion", env=env, check=False)
    assert bad.returncode == 2 and "no version nosuchversion" in bad.stderr and "Traceback" not in bad.stderr


def test_reprocess_refuses_an_unversioned_bucket(cluster_env, bucket):
    refused = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--only-stale",
                      env=cluster_env, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "has no object versioning" in refused.stderr
    assert "--overwrite" in refused.stderr


def test_worker_killed_during_reprocess_leaves_one_new_version_each(cluster_env, bucket, s3, start_workers,
                                                                    archive_photos, tmp_path):
    """SIGKILL the worker in the middle of a reprocess's upscale: the task is
    delivered again, and each image still gets exactly one new version (a
    repeated write of the same revision finds it on top and writes nothing)."""
    import signal
    import time

    import redis

    from orchestration.settings import Settings
    from orchestration.storage import Storage

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {**cluster_env, "RETOUCH_MODEL_DIR": str(tmp_path / "store"), "RETOUCH_SIMULATE_GPUS": "1"}
    v1, v2 = _models(tmp_path)
    retouch("models", "add", str(v1), "--licence", "test", env=env)
    photos = archive_photos(6, seed=41)        # 256 px, upscaled x4: about a second each here
    _upload(s3, bucket, "in", photos)
    workers = start_workers(env, "--gpus", "0", "--cpu-concurrency", "1")
    workers.wait_ready(["gpu.0", "cpu"], env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "upscale", "--upscale",
                  "tiny-up", env=env).stdout.strip()
    assert "6 done, 0 failed" in wait_job(env, job, timeout=240)
    outputs = _outputs(s3, bucket, "out")
    retouch("models", "add", str(v2), "--licence", "test", "--replace", env=env)

    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    victim = workers.child("gpu.0")
    job = retouch("reprocess", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--only-stale",
                  env=env).stdout.strip()
    deadline, killed = time.monotonic() + 120, None
    while killed is None and time.monotonic() < deadline:
        for key in r.scan_iter("retouch:worker:gpu0.*:current"):
            current = json.loads(r.get(key) or "{}")
            if current.get("task") == "upscale" and current.get("job") == job:
                victim.send_signal(signal.SIGKILL)
                killed = current
                break
        time.sleep(0.02)
    assert killed, "the reprocess's upscale task was never seen running"
    assert "6 done, 0 failed" in wait_job(env, job, timeout=240)
    assert workers.child("gpu.0").pid != victim.pid
    assert max(int(r.get(k)) for k in r.scan_iter("retouch:delivery:*")) >= 2   # delivered again
    for key in outputs:
        assert len(_versions(s3, bucket, key)) == 2, key           # exactly one new version each
        assert len(_versions(s3, bucket, key + ".json")) == 2, key

    # the same revision written again (a redelivered finish) never makes a version
    settings = Settings(_env_file=None, s3_endpoint_url=env["RETOUCH_S3_ENDPOINT_URL"],
                        s3_access_key_id=env["AWS_ACCESS_KEY_ID"], s3_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    storage = Storage.from_settings(settings)
    key = outputs[0]
    meta = storage.head(bucket, key)
    assert not storage.put_revision(bucket, key, b"other bytes", {}, "image/jpeg", meta["retouch-revision"])
    assert len(_versions(s3, bucket, key)) == 2
