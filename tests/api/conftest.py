"""A real ``retouch serve`` on 127.0.0.1 (a subprocess, as a user starts it),
called over HTTP with httpx.

- ``start_api(*args, env=...)``: start a server with extra flags/settings;
  stopped at teardown (module scope).
- ``api``: the plain server of the session (no token: loopback only;
  default limits).
"""

from __future__ import annotations

import pytest

from tests.api.apilib import ApiServer, launch


@pytest.fixture(scope="module")
def start_api(tmp_path_factory):
    started: list[ApiServer] = []

    def start(*args: str, env: dict | None = None) -> ApiServer:
        server = launch(tmp_path_factory.mktemp("serve"), *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    server = launch(tmp_path_factory.mktemp("serve"))
    yield server
    server.stop()
