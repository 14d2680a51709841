"""`retouch cluster up/down` on loopback, a --cpu worker serving every stage,
and the cluster commands' errors."""

from __future__ import annotations

import os
import stat
import time

import psutil
import pytest
import redis

from clusterlib import retouch, wait_job

pytestmark = pytest.mark.cluster


def test_cluster_up_serves_a_job_with_one_cpu_worker_then_down(tmp_path, archive_photos):
    import boto3

    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))}
    env.update({"AWS_ACCESS_KEY_ID": "clusterkey", "AWS_SECRET_ACCESS_KEY": "cluster-secret-123",
                "RETOUCH_SETTINGS_FILE": "/nonexistent/retouch.env", "RETOUCH_DEVICE": "cpu"})
    up = retouch("cluster", "up", "--state-dir", str(state), "--redis-port", "0", "--s3-port", "0", env=env,
                 timeout=120)
    try:
        assert "cluster-secret-123" not in up.stdout + up.stderr
        endpoints = dict(line.split(":", 1) for line in up.stdout.splitlines() if line.startswith(("redis", "s3")))
        redis_url, s3_url = endpoints["redis"].strip(), endpoints["s3"].strip()
        assert redis_url.startswith("redis://127.0.0.1:") and s3_url.startswith("http://127.0.0.1:")
        env_file = state / "cluster.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        pids = {n: int((state / f"{n}.pid").read_text()) for n in ("redis", "s3", "worker", "beat")}  # one beat too
        assert all(psutil.pid_exists(p) for p in pids.values())
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in (pids["redis"], pids["s3"]):
                assert conn.laddr.ip == "127.0.0.1", conn  # loopback only

        again = retouch("cluster", "up", "--state-dir", str(state), env=env, check=False)
        assert again.returncode == 1 and "already up" in again.stderr

        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="clusterkey",
                          aws_secret_access_key="cluster-secret-123")
        s3.create_bucket(Bucket="archive")
        photos = archive_photos(2, seed=3)
        for name, data in photos.items():
            s3.put_object(Bucket="archive", Key=f"raw/{name}", Body=data)
        job_env = {**env, "RETOUCH_REDIS_URL": redis_url, "RETOUCH_S3_ENDPOINT_URL": s3_url}
        deadline = time.monotonic() + 60  # the worker connects in the background
        while not redis.Redis.from_url(redis_url).keys("_kombu.binding.cpu*") and time.monotonic() < deadline:
            time.sleep(0.3)
        job = retouch("submit", "s3://archive/raw", "--out", "s3://archive/restored", "--ops", "remove-text,upscale",
                      "--upscale", "lanczos", "--scale", "2", env=job_env).stdout.strip()
        last = wait_job(job_env, job, timeout=120)
        assert "2 done, 0 failed" in last, last
        out = s3.list_objects_v2(Bucket="archive", Prefix="restored/")["Contents"]
        outputs = [o for o in out if o["Key"].endswith(".jpg") and "/_retouch/" not in o["Key"]]
        assert len(outputs) == 2
        head = s3.head_object(Bucket="archive", Key=outputs[0]["Key"])
        assert head["Metadata"]["retouch-ops"] == "remove-text,upscale"
        # the same bytes as the embedded run with the same flags
        folder = tmp_path / "photos"
        folder.mkdir()
        for name, data in photos.items():
            (folder / name).write_bytes(data)
        retouch("run", str(folder), "--out", str(tmp_path / "embedded"), "--ops", "remove-text,upscale",
                "--upscale", "lanczos", "--scale", "2", "--no-progress", env=env)
        for obj in outputs:
            name = obj["Key"].split("/")[-1]
            assert s3.get_object(Bucket="archive", Key=obj["Key"])["Body"].read() == \
                (tmp_path / "embedded" / name).read_bytes(), name
    finally:
        down = retouch("cluster", "down", "--state-dir", str(state), env=env, timeout=90)
    assert "worker" in down.stdout and "redis" in down.stdout and "s3" in down.stdout
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids.values()):
        assert time.monotonic() < deadline, "cluster processes still running after down"
        time.sleep(0.2)
    assert not list(state.glob("*.pid"))


def test_command_errors(cluster_env, bucket):
    proc = retouch("status", "nosuchjob", env=cluster_env, check=False)
    assert proc.returncode == 2 and "unknown job 'nosuchjob'" in proc.stderr
    proc = retouch("worker", "--gpus", "0,0", env=cluster_env, check=False)
    assert proc.returncode == 2 and "distinct" in proc.stderr
    proc = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/out", "--ops", "sharpen",
                   env=cluster_env, check=False)
    assert proc.returncode == 2 and "unknown op" in proc.stderr
    proc = retouch("submit", "/local/folder", "--out", f"s3://{bucket}/out", env=cluster_env, check=False)
    assert proc.returncode == 2 and "not an s3:// URL" in proc.stderr
