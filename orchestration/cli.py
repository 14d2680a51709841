"""The ``retouch`` command. Each subcommand lives in ``orchestration/commands/``
as a module with ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code).

An expected failure (:class:`worker.errors.RetouchError`: bad settings, an
unknown job, a refused URL...) raised by a command is printed as one line,
``retouch COMMAND: cause``, with exit code 2; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import orchestration.commands
from monitoring.logs import configure_logging
from worker import __version__
from worker.errors import RetouchError

# Subcommands listed first in help; any other module in orchestration/commands
# follows in alphabetical order, so adding a command never edits this file.
FIRST = ["run", "submit", "status", "watch", "worker", "serve", "cluster", "models", "eval", "bench"]


def command_names() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(orchestration.commands.__path__) if not m.name.startswith("_")}
    return [n for n in FIRST if n in found] + sorted(found - set(FIRST))


def build_parser() -> argparse.ArgumentParser:
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
    args = build_parser().parse_args(argv)
    # eval and bench print their own tables; decision lines would drown them.
    configure_logging(args.log_level, decisions=args.command not in ("eval", "bench"))
    try:
        return int(args.func(args) or 0)
    except RetouchError as exc:
        print(f"retouch {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
