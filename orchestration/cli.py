"""The ``retouch`` command. Each subcommand lives in ``orchestration/commands/``
as a module with ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per subcommand, in help order.
COMMANDS = ["run", "eval", "bench"]


def build_parser() -> argparse.ArgumentParser:
    from worker import __version__

    parser = argparse.ArgumentParser(
        prog="retouch",
        description="Batch restoration for image archives: remove text and watermarks, inpaint, upscale.",
    )
    parser.add_argument("--version", action="version", version=f"retouch {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"orchestration.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from monitoring.logs import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
