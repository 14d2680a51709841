"""Jobs over HTTP on a real cluster: ``retouch serve`` with real redis-server,
SeaweedFS (weed mini) and a ``retouch worker``. A job posted with an
Idempotency-Key is the same job when retried; it completes with its manifest
and outputs equal to ``retouch run``'s; a cancelled job drains without
computing and still ends with its manifest."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from clusterlib import retouch
from tests.api.apilib import launch

pytestmark = pytest.mark.cluster


def _wait(client: httpx.Client, job: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/v1/jobs/{job}").json()
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, f"job {job} still {view['state']} after {timeout}s: {view}"
        time.sleep(0.5)


def _error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


def test_jobs_over_http(cluster_env, bucket, s3, start_workers, archive_photos, redis_server, tmp_path):
    photos = archive_photos(3, seed=4)
    for name, data in photos.items():
        s3.put_object(Bucket=bucket, Key=f"raw/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="raw/broken.jpg", Body=photos["astronaut-000.jpg"][:200])
    api = launch(tmp_path, env={k: v for k, v in cluster_env.items() if k.startswith(("RETOUCH_", "AWS_"))})
    try:
        with api.client() as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"broker": "ok", "storage": "ok"}

            body = {"input": f"s3://{bucket}/raw", "output": f"s3://{bucket}/restored",
                    "plan": {"ops": ["remove-text"], "mask_sigma": 4, "seed": 3}, "batch_size": 2}
            first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-25"})
            assert first.status_code == 202, first.text
            job = first.json()["id"]
            assert first.headers["location"] == f"/v1/jobs/{job}"
            # a retried POST (same key, same request) is the same job, not a second one
            again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-25"})
            assert again.status_code == 202 and again.json()["id"] == job
            assert again.headers["idempotent-replayed"] == "true" and again.headers["location"] == f"/v1/jobs/{job}"
            # the same key for another request is refused
            other = {**body, "plan": {"ops": ["remove-text"], "seed": 4}}
            assert "already used" in _error(c.post("/v1/jobs", json=other,
                                                   headers={"Idempotency-Key": "nightly-2026-11-25"}), 422)
            # bad requests: 4xx with one line, nothing enqueued
            assert "unknown field(s) sead" in _error(c.post("/v1/jobs", json={**body, "plan": {"sead": 1}}), 422)
            assert "overlaps" in _error(c.post("/v1/jobs", json={**body, "output": f"s3://{bucket}/raw/x"}), 422)
            assert "no such bucket" in _error(c.post("/v1/jobs", json={**body, "input": "s3://nosuchbucket/raw",
                                                                       "output": "s3://nosuchbucket/out"}), 422)
            assert "not an s3:// URL" in _error(c.post("/v1/jobs", json={**body, "input": "/tmp/raw"}), 422)
            assert _error(c.get("/v1/jobs/0123456789ab"), 404).startswith("unknown job '0123456789ab': ")

            # a second job, cancelled while its images wait for a worker
            doomed = c.post("/v1/jobs", json={**body, "output": f"s3://{bucket}/doomed"}).json()["id"]
            assert _wait(c, doomed, {"queued"}, 60)["progress"]["total"] == 4
            cancelled = c.delete(f"/v1/jobs/{doomed}")
            assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelling"
            assert retouch("status", doomed, env=cluster_env).stdout.startswith(f"job {doomed}: cancelling")

            workers = start_workers(cluster_env, "--cpu")
            workers.wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])

            done = _wait(c, job, {"finished"}, 240)
            assert done["progress"] == {"total": 4, "queued": 0, "running": 0, "ok": 3, "failed": 1, "skipped": 0,
                                        "completed": 4, "fraction": 1.0}
            assert done["manifest"] == f"s3://{bucket}/restored/_retouch/jobs/{job}/manifest.jsonl"
            manifest = c.get(done["links"]["manifest"])
            assert manifest.status_code == 200 and manifest.headers["content-type"] == "application/x-ndjson"
            lines = {line["key"]: line for line in map(json.loads, manifest.text.splitlines())}
            assert lines["raw/broken.jpg"]["status"] == "failed"
            assert lines["raw/broken.jpg"]["error"].startswith(f"s3://{bucket}/raw/broken.jpg: ")

            gone = _wait(c, doomed, {"cancelled"}, 120)
            assert gone["progress"]["failed"] == 4 and gone["progress"]["ok"] == 0
            doomed_lines = [json.loads(line) for line in c.get(f"/v1/jobs/{doomed}/manifest").text.splitlines()]
            assert len(doomed_lines) == 4
            assert all(f"job {doomed} was cancelled" in line["error"] and not line["timings"]
                       for line in doomed_lines)
            assert "already cancelled" not in c.delete(f"/v1/jobs/{doomed}").text   # idempotent: still 202
            assert "already finished" in _error(c.delete(f"/v1/jobs/{job}"), 409)

        # the job's outputs are what retouch run writes with the same settings
        name = "chelsea-001.jpg"
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / name).write_bytes(photos[name])
        retouch("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--seed", "3", "--no-progress",
                env=cluster_env)
        served = s3.get_object(Bucket=bucket, Key=f"restored/{name}")["Body"].read()
        assert served == (tmp_path / "out" / name).read_bytes()

        # readiness follows the broker
        redis_server.stop()
        with api.client() as c:
            not_ready = c.get("/readyz")
        assert "broker unreachable" in _error(not_ready, 503)
        assert not_ready.json()["checks"]["storage"] == "ok"
    finally:
        api.stop()
