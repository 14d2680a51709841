"""Who may call ``/v1/*``: closed by default.

With a token in settings (``RETOUCH_API_TOKEN``), every ``/v1`` request needs
``Authorization: Bearer <token>`` (compared in constant time); 401 otherwise.
Without one, only loopback clients are answered (403 for anyone else), and
``retouch serve`` refuses to listen on a non-loopback address at all. The
client address is the one uvicorn reports, which honours ``X-Forwarded-For``
only from trusted proxies (127.0.0.1 by default): a local reverse proxy that
forwards a remote client does not make that client loopback.

``/healthz``, ``/readyz``, ``/metrics`` and the OpenAPI pages stay open: probes
and Prometheus scrapes carry no token, and they reveal nothing of the images.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from orchestration.api.errors import ApiError


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def check_token(authorization: str | None, token: str) -> None:
    """Raise 401 unless ``authorization`` is ``Bearer <token>``."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)",
                       headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "wrong bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def require_access(request: Request) -> None:
    """FastAPI dependency of every ``/v1`` route."""
    state = request.app.state.retouch
    token = state.settings.api_token
    if token is not None:
        check_token(request.headers.get("authorization"), token.get_secret_value())
        return
    host = request.client.host if request.client else None
    if not is_loopback(host):
        raise ApiError(403, f"client {host or 'unknown'} refused: this server has no API token "
                            "(RETOUCH_API_TOKEN) and answers loopback clients only")
