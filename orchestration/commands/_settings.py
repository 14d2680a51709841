"""Settings for the cluster commands, with one-line errors instead of tracebacks."""

from __future__ import annotations

import sys


class BadSettings(SystemExit):
    """Raised (exit code 2) after printing why the settings are invalid."""


def cluster_settings(prog: str, **overrides):
    from pydantic import ValidationError

    from orchestration.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"retouch {prog}: invalid settings: {why}", file=sys.stderr)
        raise BadSettings(2) from None
