"""``retouch history s3://OUT/KEY``: the revisions of one output."""

from __future__ import annotations

import json

from orchestration.revisions import history
from orchestration.settings import load_settings
from orchestration.storage import Storage


def register(sub) -> None:
    p = sub.add_parser("history", help="list the revisions (S3 versions) of one output",
                       description="List the versions of one output, newest first: version id, date, job, "
                                   "models, fingerprint and size (a versioned output bucket keeps them all).")
    p.add_argument("url", metavar="s3://OUT/KEY", help="an output object")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = history(Storage.from_settings(load_settings()), args.url)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"  {'version':<34} {'date':<25} {'job':<12} {'fingerprint':<16} {'size':>9}  models")
    for r in rows:
        print(f"{'*' if r['latest'] else ' '} {r['version']:<34} {r['date']:<25} {r['job'] or '-':<12} "
              f"{r['fingerprint'] or '-':<16} {r['size']:>9}  {r['models'] or '-'}")
    return 0
