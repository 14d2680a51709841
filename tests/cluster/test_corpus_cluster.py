"""`retouch run` and `retouch submit` agree on every file kind of the archive
corpus (tests/test_corpus.py): the same outputs byte for byte, the same
failures with the same causes. Kinds that only a file system has (links,
FIFOs, locked paths) are left out: an S3 prefix holds none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterlib import retouch, wait_job
from tests.test_corpus import KINDS

pytestmark = pytest.mark.cluster

PLAN = ["--ops", "upscale", "--upscale", "lanczos", "--scale", "1", "--max-pixels", "4000000"]
FILE_SYSTEM_ONLY = ("unreadable", "dangling", "symlink", "fifo", "explicit")


def test_run_and_submit_agree_on_every_file_kind(cluster_env, bucket, s3, start_workers, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    for k in KINDS:
        if not k.name.startswith(FILE_SYSTEM_ONLY):
            k.make(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) >= 90
    for p in files:
        s3.put_object(Bucket=bucket, Key=f"raw/{p.relative_to(folder).as_posix()}", Body=p.read_bytes())

    local = retouch("run", str(folder), "--out", str(tmp_path / "out"), *PLAN, "--no-progress", env=cluster_env,
                    check=False, timeout=300)
    assert "Traceback" not in local.stdout + local.stderr
    local_failed = {line.strip()[len("FAILED "):].split(": ", 1)[0]: line.strip().split(": ", 1)[1]
                    for line in local.stdout.splitlines() if line.strip().startswith("FAILED ")}

    workers = start_workers(cluster_env, "--cpu")
    workers.wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/restored", *PLAN,
                  env=cluster_env).stdout.strip()
    last = wait_job(cluster_env, job, timeout=300)
    status = json.loads(retouch("status", job, "--json", env=cluster_env).stdout)
    manifest_bucket, manifest_key = status["manifest"][5:].split("/", 1)
    lines = {json.loads(line)["key"]: json.loads(line) for line in
             s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read().decode().splitlines() if line}
    assert len(lines) == len(files), last

    disagree = []
    for p in files:
        rel = p.relative_to(folder).as_posix()
        line = lines[f"raw/{rel}"]
        if str(p) in local_failed:
            cause = line["error"].split(": ", 1)[1] if line["error"] else None
            if line["status"] != "failed" or cause != local_failed[str(p)]:
                disagree.append((rel, "run failed", local_failed[str(p)], line["status"], line["error"]))
            continue
        ours = (tmp_path / "out" / rel).read_bytes()
        theirs = s3.get_object(Bucket=bucket, Key=f"restored/{rel}")["Body"].read() if line["status"] == "ok" else None
        if theirs != ours:
            disagree.append((rel, "run ok", line["status"], line["error"]))
    assert not disagree, disagree
    assert len(local_failed) >= 30
    log = Path(workers.log).read_text()
    assert "Traceback" not in log, log[-3000:]
