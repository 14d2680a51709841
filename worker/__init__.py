"""What a retouch worker computes: image I/O, models and the stage functions.

Nothing here imports Celery, boto3 or the CLI; every function runs on arrays
and small JSON-able records, so it runs unchanged in-process or in a task."""

__version__ = "0.1.0"
