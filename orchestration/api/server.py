"""Run the API under uvicorn (one process; scale out with more replicas).

Closed by default: without an API token the server listens on loopback
addresses only (:func:`check_bind` refuses anything else). uvicorn stops
gracefully on SIGTERM (in-flight requests finish within
``graceful_timeout``).
"""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from orchestration.api.access import is_loopback
from orchestration.api.app import create_app
from orchestration.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def check_bind(host: str, settings: Settings) -> None:
    """Raises SettingsError if ``host`` is not loopback and there is no API token."""
    if settings.api_token is not None or is_loopback(host):
        return
    try:
        ipaddress.ip_address(host)
        kind = "address"
    except ValueError:
        kind = "host name"
    raise SettingsError(f"listening on {kind} {host} needs an API token (set RETOUCH_API_TOKEN); without one "
                        "the API serves loopback clients only: use --host 127.0.0.1")


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, *, graceful_timeout: float = 30.0,
          max_connections: int = 256, log_level: str = "warning") -> None:
    """Serve until SIGTERM/SIGINT. Raises SettingsError (see :func:`check_bind`)."""
    check_bind(host, settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level.lower(), access_log=False,
        # connections beyond this get 503 at once instead of queueing without bound
        limit_concurrency=max_connections, timeout_keep_alive=5,
        timeout_graceful_shutdown=graceful_timeout,
        # X-Forwarded-For is believed from a local proxy only (uvicorn's default)
        proxy_headers=True, forwarded_allow_ips="127.0.0.1",
    )
    uvicorn.Server(config).run()
