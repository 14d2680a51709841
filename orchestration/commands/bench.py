"""``retouch bench [NAME]``: benchmarks that print figures.

Each benchmark is a module ``orchestration.bench.NAME`` with
``add_arguments(parser)`` and ``run(args) -> int``. ``retouch bench`` alone runs
the embedded-pipeline benchmark (``orchestration.bench.pipeline``)."""

from __future__ import annotations

import importlib

BENCHMARKS = ["pipeline"]


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks (medians over repeated runs, with a machine description)")
    names = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCHMARKS:
        module = importlib.import_module(f"orchestration.bench.{name}")
        p = names.add_parser(name, help=module.__doc__.splitlines()[0] if module.__doc__ else name)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    default = importlib.import_module("orchestration.bench.pipeline")
    default.add_arguments(parser)
    parser.set_defaults(func=default.run)
