"""The ``retouch`` command. Each subcommand lives in ``orchestration/commands/``
as a module with ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

# Subcommands listed first in help; any other module in orchestration/commands
# follows in alphabetical order, so adding a command never edits this file.
FIRST = ["run", "submit", "status", "watch", "worker", "cluster", "models", "eval", "bench"]


def command_names() -> list[str]:
    import orchestration.commands as package

    found = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    return [n for n in FIRST if n in found] + sorted(found - set(FIRST))


def build_parser() -> argparse.ArgumentParser:
    from worker import __version__

    parser = argparse.ArgumentParser(
        prog="retouch",
        description="Batch restoration for image archives: remove text and watermarks, inpaint, upscale.",
    )
    parser.add_argument("--version", action="version", version=f"retouch {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_names():
        importlib.import_module(f"orchestration.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from monitoring.logs import configure_logging

    args = build_parser().parse_args(argv)
    # eval and bench print their own tables; decision lines would drown them.
    configure_logging(args.log_level, decisions=args.command not in ("eval", "bench"))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
