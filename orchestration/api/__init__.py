"""The HTTP API of retouch (``retouch serve``): FastAPI over the same pipeline.

- ``images``: synchronous endpoints for one image (``/v1/detect-mask``,
  ``/v1/inpaint``, ``/v1/upscale``, ``/v1/postprocess``), run in process by
  the embedded executor (``orchestration.local.restore``), so a response holds
  the same bytes as ``retouch run`` with the same settings;
- ``jobs``: asynchronous jobs over an S3 prefix (``/v1/jobs``), enqueued on the
  Celery cluster exactly as ``retouch submit`` does;
- ``health``: ``/healthz``, ``/readyz`` and ``/metrics``.

``app.create_app(settings)`` builds the application; ``server.serve`` runs it
under uvicorn. Access (bearer token, or loopback clients only), limits (body
size, pixels, concurrency, time) and the JSON error shape are in ``access``,
``limits`` and ``errors``. docs/api.md is the reference.
"""
