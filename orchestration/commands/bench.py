"""``retouch bench [NAME]``: benchmarks that print figures.

Each benchmark is a module ``orchestration.bench.NAME`` with
``add_arguments(parser)`` and ``run(args) -> int``; a new module is picked up
without editing this file. ``retouch bench`` alone runs
the embedded-pipeline benchmark (``orchestration.bench.pipeline``)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import orchestration.bench

DEFAULT = "pipeline"  # what ``retouch bench`` alone runs


def benchmark_names() -> list[str]:
    """Every module in ``orchestration.bench`` (pipeline first)."""
    found = sorted(m.name for m in pkgutil.iter_modules(orchestration.bench.__path__) if not m.name.startswith("_"))
    return sorted(found, key=lambda n: n != "pipeline")


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks (medians over repeated runs, with a machine description)")
    names = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name in benchmark_names():
        module = importlib.import_module(f"orchestration.bench.{name}")
        p = names.add_parser(name, help=module.__doc__.splitlines()[0] if module.__doc__ else name)
        module.add_arguments(p)
        if name == DEFAULT:
            # its options are also the bare command's: given before the name
            # ("bench --repeats 1 pipeline") they must not be reset by the
            # name's own defaults, which argparse would copy over them
            for action in p._actions:
                if action.dest != "help":
                    action.default = argparse.SUPPRESS
        p.set_defaults(func=module.run)
    default = importlib.import_module(f"orchestration.bench.{DEFAULT}")
    default.add_arguments(parser)
    parser.set_defaults(func=default.run)
