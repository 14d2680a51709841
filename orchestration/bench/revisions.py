"""The revisions walk-through with its figures: a model replaced, stale, reprocess, rollback, schedules.

What a new user does, each step a real ``retouch`` command against its own
redis-server, ``weed mini`` (a versioned bucket) and ``retouch worker --cpu``:
process N images (half with a store upscaler ``demo-up``, half with lanczos),
replace ``demo-up`` (``models add --replace``, weights perturbed), list the
stale outputs, ``reprocess --only-stale``, check each redone output has two
versions, ``rollback`` one and compare its bytes with the first version, then
run a schedule every few seconds under two ``retouch beat`` processes and
count its turns. Prints each step's wall time (one run: a walk-through, not a
median) and the machine line; raises on any mismatch.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from orchestration.bench.cluster import make_images
from orchestration.bench.pipeline import machine
from orchestration.cluster import start_redis, start_s3
from orchestration.settings import load_settings
from orchestration.storage import Storage
from tasks.schedules import runs


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=20, help="images (default 20; half use the replaced model)")
    parser.add_argument("--size", type=int, default=128, help="image side in px (default 128; upscaled x2)")
    parser.add_argument("--period", type=float, default=3.0, help="the schedule's period in seconds (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


class Failed(RuntimeError):
    pass


def _cli(env, *args, timeout=600) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise Failed(f"retouch {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout, time.perf_counter() - start


def _perturbed(src: Path, dest: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    first = next(k for k in state if k.endswith("weight"))
    state[first] = state[first] * 1.05
    save_file(state, str(dest))


def run(args) -> int:
    half = args.images // 2
    model_src = Path(load_settings().model_dir) / "realesr-animevideov3.safetensors"
    if not model_src.is_file():
        raise Failed(f"{model_src}: missing (run `make models`)")
    tmp = Path(tempfile.mkdtemp(prefix="retouch-revisions-"))
    store = tmp / "store"
    v1, v2 = tmp / "v1" / "demo-up.safetensors", tmp / "v2" / "demo-up.safetensors"
    v1.parent.mkdir()
    v2.parent.mkdir()
    shutil.copy(model_src, v1)
    _perturbed(v1, v2)
    access, secret = "demo" + secrets.token_hex(4), secrets.token_urlsafe(18)
    servers = [start_redis(tmp / "redis"), start_s3(tmp / "s3", access_key=access, secret_key=secret)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))},
           "RETOUCH_REDIS_URL": servers[0].url, "RETOUCH_S3_ENDPOINT_URL": servers[1].url,
           "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "RETOUCH_DEVICE": "cpu",
           "RETOUCH_MODEL_DIR": str(store), "RETOUCH_STATE_DIR": str(tmp / "state"),
           "RETOUCH_SETTINGS_FILE": "/nonexistent/retouch.env"}
    procs = [subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", "--cpu"], env=env,
                              stdout=(tmp / "worker.log").open("wb"), stderr=subprocess.STDOUT)]
    figures: dict = {"images": args.images, "size": f"{args.size}x{args.size}", "seconds": {}}
    sec = figures["seconds"]
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith(("RETOUCH_", "AWS_"))})
        storage = Storage.from_settings(load_settings())
        client = storage.client
        bucket = "archive"
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        images = make_images(args.images, args.size)
        names = sorted(images)
        for i, name in enumerate(names):
            storage.put(bucket, f"raw/{'a' if i < half else 'b'}/{name}", images[name])
        _cli(env, "models", "add", str(v1), "--licence", "demo")

        for sub, variant in (("a", "demo-up"), ("b", "lanczos")):
            _, sec[f"submit_{sub}_{variant}"] = _cli(env, "submit", f"s3://{bucket}/raw/{sub}", "--out",
                                                     f"s3://{bucket}/restored/{sub}", "--ops", "upscale", "--upscale",
                                                     variant, "--scale", "2", "--wait")
        outputs = sorted(o["Key"] for o in storage.list_objects(f"s3://{bucket}/restored")
                         if not o["Key"].endswith(".json") and "/_retouch/" not in o["Key"])
        if len(outputs) != args.images:
            raise Failed(f"{len(outputs)} outputs, expected {args.images}")
        first = {k: storage.get(bucket, k) for k in outputs}
        _cli(env, "models", "add", str(v2), "--licence", "demo", "--replace")

        out, sec["status_stale"] = _cli(env, "status", f"s3://{bucket}/restored", "--stale", "--json")
        report = json.loads(out)
        stale = sorted(o["output"].split("/", 3)[3] for g in report["causes"].values() for o in g)
        used = [k for k in outputs if k.startswith("restored/a/")]
        if list(report["causes"]) != ["model=demo-up"] or stale != used:
            raise Failed(f"stale {report['causes'].keys()} {stale} != the {len(used)} outputs that used demo-up")
        figures["stale"] = {"outputs": report["outputs"], "stale": report["stale"], "causes": list(report["causes"])}

        _, sec["reprocess_only_stale"] = _cli(env, "reprocess", f"s3://{bucket}/raw", "--out",
                                              f"s3://{bucket}/restored", "--only-stale", "--wait")
        versions = {k: len(storage.versions(bucket, k)) for k in outputs}
        if any(versions[k] != (2 if k in used else 1) for k in outputs):
            raise Failed(f"versions after reprocess: {versions}")
        figures["versions"] = {"redone_with_2": sum(versions[k] == 2 for k in used),
                               "untouched_with_1": sum(versions[k] == 1 for k in outputs if k not in used)}

        key = used[0]
        hist, sec["history"] = _cli(env, "history", f"s3://{bucket}/{key}", "--json")
        old = json.loads(hist)[-1]["version"]
        _, sec["rollback"] = _cli(env, "rollback", f"s3://{bucket}/{key}", "--to", old)
        figures["rollback_byte_identical"] = storage.get(bucket, key) == first[key]
        if not figures["rollback_byte_identical"]:
            raise Failed(f"{key}: rolled-back bytes differ from the first version")

        # the rolled-back output is stale again: a schedule under two beats redoes it
        _cli(env, "schedule", "add", "demo", "--every", str(args.period), "--", "reprocess", f"s3://{bucket}/raw",
             "--out", f"s3://{bucket}/restored", "--only-stale")
        r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
        started = time.time()
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "orchestration.cli", "beat"], env=env,
                                          stdout=(tmp / f"beat-{i}.log").open("wb"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 180
        while len(storage.versions(bucket, key)) < 4:
            if time.monotonic() > deadline:
                raise Failed("the schedule did not redo the rolled-back output within 180 s")
            time.sleep(0.5)
        sec["schedule_first_fix"] = round(time.time() - started, 1)
        window = 8 * args.period
        time.sleep(window)
        turns = sorted(x["time"] for x in runs(r, "demo"))
        gaps = [b - a for a, b in zip(turns, turns[1:])]
        figures["schedule"] = {"period_s": args.period, "turns": len(turns),
                               "elapsed_s": round(time.time() - started, 1),
                               "min_gap_s": round(min(gaps), 2) if gaps else None,
                               "results": sorted({x["result"] for x in runs(r, "demo")}),
                               "versions_of_rolled_back": len(storage.versions(bucket, key))}
        if gaps and min(gaps) < args.period * 0.6:
            raise Failed(f"two turns {min(gaps):.2f}s apart: a beat fired twice")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(servers):
            server.stop()
    figures["machine"] = machine("cpu")
    sec.update({k: round(v, 2) for k, v in sec.items()})
    m = figures["machine"]
    print(f"revisions walk-through: {args.images} images of {figures['size']}, upscale x2 (half demo-up, half "
          "lanczos), one `retouch worker --cpu`; wall seconds per step (one run):")
    for step, s in sec.items():
        print(f"  {step:<28} {s:>7.2f} s")
    st, v, sc = figures["stale"], figures["versions"], figures["schedule"]
    print(f"  stale after --replace: {st['stale']}/{st['outputs']} ({', '.join(st['causes'])}); after reprocess "
          f"{v['redone_with_2']} outputs with 2 versions, {v['untouched_with_1']} untouched with 1; rollback byte-"
          f"identical: {figures['rollback_byte_identical']}")
    print(f"  schedule every {sc['period_s']:g}s under two beats: {sc['turns']} turns in {sc['elapsed_s']}s, "
          f"closest two {sc['min_gap_s']}s apart, results {sc['results']}; the rolled-back output redone "
          f"({sc['versions_of_rolled_back']} versions)")
    print(f"  machine: {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, {m['memory_gb']} GB, load average "
          f"{m['load_average_1m']}, torch {m['torch']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0
