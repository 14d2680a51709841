"""The one base class of expected failures.

A :class:`RetouchError` is a failure the user can act on: a file that is not
an image, a model that is not installed, a refused write, a bad setting. Its
``str()`` is one line that names the thing (file, key, model, value) and the
cause. Executors report it as that line and go on with the next image.

Anything else raised while processing an image is a bug: executors log it
with its traceback and still fail only that image. So never raise a bare
``ValueError`` for bad input, and never catch ``ValueError`` to mean "bad
input": a numpy, OpenCV or torch bug raises those too.
"""

from __future__ import annotations


class RetouchError(Exception):
    """An expected failure; ``str()`` is one line naming what failed and why."""

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split()) if "\n" in text else text


class PlanError(RetouchError):
    """Settings that cannot make a valid plan (an unknown op, a scale out of
    range, a learned model in forensic mode, a mask of the wrong size)."""


def one_line(exc: BaseException) -> str:
    """A one-line cause for any exception: a RetouchError's own text, a
    pydantic ValidationError's fields and messages, else the first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                         for e in exc.errors())
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    return text.splitlines()[0] if text else type(exc).__name__
