"""``retouch serve``: the HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import sys

from orchestration.api.server import check_bind, serve
from orchestration.settings import load_settings

DESCRIPTION = """Serve the HTTP API: synchronous /v1/detect-mask, /v1/inpaint, /v1/upscale and
/v1/postprocess for one image (the same bytes as `retouch run`), asynchronous /v1/jobs over
an S3 prefix on the cluster, /healthz, /readyz, /metrics, and the OpenAPI docs at /docs.
/v1/* needs `Authorization: Bearer <RETOUCH_API_TOKEN>`; without a token the server
listens on loopback only. Limits: RETOUCH_API_MAX_BODY_MB, RETOUCH_MAX_PIXELS,
RETOUCH_API_REQUEST_TIMEOUT, RETOUCH_API_CONCURRENCY (see docs/api.md)."""


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API (FastAPI/uvicorn)", description=DESCRIPTION)
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default 127.0.0.1; anything else needs RETOUCH_API_TOKEN)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    p.add_argument("--max-body-mb", type=float, help="largest request body in MiB (default from settings: 64)")
    p.add_argument("--request-timeout", type=float,
                   help="seconds a synchronous request may take (default from settings: 300)")
    p.add_argument("--concurrency", type=int,
                   help="images processed at once by the synchronous endpoints (default from settings: 1)")
    p.add_argument("--max-pixels", type=int, help="refuse larger images (default from settings: 100 MP)")
    p.add_argument("--device", help="auto, cpu or cuda:N (default from settings: auto)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="open connections before new ones get 503 (default 256)")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = load_settings(api_max_body_mb=args.max_body_mb, api_request_timeout=args.request_timeout,
                             api_concurrency=args.concurrency, max_pixels=args.max_pixels, device=args.device)
    check_bind(args.host, settings)
    auth = "bearer token required" if settings.api_token is not None else "no token: loopback clients only"
    print(f"retouch serve: http://{args.host}:{args.port} ({auth}; docs at /docs)", file=sys.stderr, flush=True)
    serve(settings, args.host, args.port, max_connections=args.max_connections)
    return 0
