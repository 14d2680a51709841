"""``retouch eval``: reproducible synthetic degradations of clean photos, every
named variant and the ``auto`` choice run on them through the embedded runner,
metrics against the ground truth, and an HTML/JSON/CSV report.

- :mod:`.dataset`: clean photos (bundled, a folder, or s3://) -> degraded cases
- :mod:`.runner`: cases x variants -> per-image rows, per-variant summary
- :mod:`.report`: tables, crops, heatmaps, histograms, ``index.html``
"""
