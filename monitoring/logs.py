"""Structured JSON logs. Every model-selection decision is one JSON line with the
stage, variant, reason, image, job and the inputs that drove it, so a log search
and a dashboard panel tell the same story."""

from __future__ import annotations

import json
import logging
import sys
import time

DECISION_LOGGER = "retouch.decision"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, sort_keys=False)


def configure_logging(level: str = "WARNING", stream=None, decisions: bool = True) -> None:
    """JSON lines on stderr for every retouch logger. Decisions are logged at
    INFO whatever the level, unless ``decisions`` is False (eval and bench,
    which report their choices in their own tables)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger(DECISION_LOGGER).setLevel(logging.INFO if decisions else logging.NOTSET)


def log_decision(decision: dict, image: str, job: str | None = None) -> None:
    """Log one model-selection decision (a ``Decision.to_dict()``) as a JSON line."""
    logging.getLogger(DECISION_LOGGER).info(
        "model selection", extra={"fields": {"event": "model_selection", "image": image, "job": job, **decision}}
    )


def log_decisions_to(path) -> None:
    """Every model-selection decision also goes to a JSON Lines file (appended
    to: several processes of one run share it, a line per write)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(DECISION_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
