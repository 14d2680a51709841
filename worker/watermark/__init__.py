"""Watermarks and logos: found in one image from a template
(:mod:`worker.watermark.match`), learned from a collection that shares one
(:mod:`worker.watermark.learn`), or found without a template
(:mod:`worker.watermark.tiled`: repeated marks). Every finding becomes an
overlay estimate (colour and alpha) that :mod:`worker.unblend` reverses, plus
the confidence map, soft mask and fill region the text detector also gives.
"""

from worker.watermark.marks import Marks, merge, template_marks
from worker.watermark.template import Template, WatermarkError, load_template, save_template

__all__ = ["Marks", "Template", "WatermarkError", "load_template", "merge", "save_template", "template_marks"]
