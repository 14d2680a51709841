"""HTTP API under load: latency percentiles and errors of N requests on loopback.

Starts ``retouch serve`` on a free loopback port (or uses ``--url``), warms it
up (the models load once), then sends ``--requests`` requests from
``--clients`` concurrent clients, each bounded by ``--timeout`` seconds and
the whole run by ``--max-seconds``, and prints p50/p95/max latency,
requests per second and the errors by status, with the machine. Figures are
printed, never asserted."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from orchestration.bench.pipeline import EXAMPLES, machine
from orchestration.cluster import free_port

ENDPOINTS = {
    "inpaint": ("/v1/inpaint", {}),
    "detect-mask": ("/v1/detect-mask", {}),
    "upscale": ("/v1/upscale", {"strategy": "lanczos", "target_scale": "2"}),
    "healthz": ("/healthz", None),
}


def add_arguments(parser) -> None:
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="inpaint",
                        help="what to call (default inpaint; upscale uses lanczos x2)")
    parser.add_argument("--image", type=Path, default=EXAMPLES / "coffee-label.jpg",
                        help="the image each request sends (default examples/coffee-label.jpg)")
    parser.add_argument("--requests", type=int, default=200, help="requests to send (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="the server's compute slots (retouch serve --concurrency; default 1)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop sending after this long")
    parser.add_argument("--url", help="an already running server (default: start one on loopback)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def _start(concurrency: int, timeout: float) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--port", str(port),
                             "--concurrency", str(concurrency), "--request-timeout", str(timeout)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"retouch serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("retouch serve did not start within 120 s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def run(args) -> int:
    path, form = ENDPOINTS[args.endpoint]
    data = args.image.read_bytes()
    headers = {}
    if os.environ.get("RETOUCH_API_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['RETOUCH_API_TOKEN']}"
    proc = None
    url = args.url
    if url is None:
        url, proc = _start(args.concurrency, args.timeout)
    client = httpx.Client(base_url=url, timeout=args.timeout, headers=headers,
                          limits=httpx.Limits(max_connections=args.clients))

    def call() -> tuple[float, str]:
        start = time.perf_counter()
        try:
            if form is None:
                r = client.get(path)
            else:
                r = client.post(path, files={"image": (args.image.name, data)}, data=form)
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return time.perf_counter() - start, status

    try:
        warm = call()      # models load here, not in the figures
        if warm[1] != "200":
            print(f"warm-up request failed: {warm[1]}", file=sys.stderr)
        started = time.perf_counter()
        results: list[tuple[float, str]] = []
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            pending = [pool.submit(call) for _ in range(args.requests)]
            for future in pending:
                remaining = args.max_seconds - (time.perf_counter() - started)
                if remaining <= 0:
                    future.cancel()
                    continue
                results.append(future.result(timeout=remaining + args.timeout))
        wall = time.perf_counter() - started
    finally:
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    latencies = [s for s, status in results if status == "200"]
    statuses = Counter(status for _, status in results)
    figures = {
        "endpoint": path, "image": str(args.image), "requests": len(results), "clients": args.clients,
        "server_concurrency": args.concurrency, "warmup_seconds": round(warm[0], 3),
        "ok": len(latencies), "errors": len(results) - len(latencies), "by_status": dict(statuses),
        "p50_s": round(_percentile(latencies, 50), 4) if latencies else None,
        "p95_s": round(_percentile(latencies, 95), 4) if latencies else None,
        "max_s": round(max(latencies), 4) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
        "requests_per_s": round(len(results) / wall, 3) if wall > 0 else None,
        "wall_s": round(wall, 2), "machine": machine("cpu"),
    }
    m = figures["machine"]
    print(f"machine: {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, {m['memory_gb']} GB, "
          f"load {m['load_average_1m']}, python {m['python']}, torch {m['torch']}")
    print(f"{path}: {figures['requests']} requests, {args.clients} clients, server concurrency {args.concurrency}")
    print(f"  latency p50 {figures['p50_s']} s, p95 {figures['p95_s']} s, max {figures['max_s']} s; "
          f"{figures['requests_per_s']} requests/s; errors {figures['errors']} {dict(statuses)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["errors"] == 0 else 1
