"""Celery side of retouch: the one app (``tasks.app``), the thin stage tasks
(``tasks.pipeline``), the worker process entry point (``tasks.worker``),
per-process runtime and time limits for solo pools."""
