"""The pipeline core: what a worker does to one image, whoever runs it.

- :mod:`plan`: the ops and parameters, and their fingerprint;
- :mod:`select`: model selection with reasons (``Decision``);
- :mod:`steps`: one step function per stage;
- :mod:`graph`: the stages declared once, walked by both executors;
- :mod:`artifacts`: what stages pass each other;
- :mod:`record`: the trace the steps report into and the per-image record;
- :mod:`job`: the typed image job that travels between Celery tasks;
- :mod:`cache`: models loaded once per process.

Nothing here imports Celery, boto3, the executors or the CLI.
"""
