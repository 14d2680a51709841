"""``retouch rollback s3://OUT/KEY --to VERSION``: bring a revision back."""

from __future__ import annotations

from orchestration.revisions import rollback
from orchestration.settings import load_settings
from orchestration.storage import Storage


def register(sub) -> None:
    p = sub.add_parser("rollback", help="restore a previous revision of an output (copied to the top)",
                       description="Copy version VERSION of an output (and the version of its JSON record "
                                   "with the same fingerprint) to the top: a new version, byte for byte the "
                                   "old one, so the history stays whole.")
    p.add_argument("url", metavar="s3://OUT/KEY", help="an output object")
    p.add_argument("--to", required=True, metavar="VERSION", help="a version id from `retouch history`")
    p.set_defaults(func=run)


def run(args) -> int:
    done = rollback(Storage.from_settings(load_settings()), args.url, args.to)
    print(f"{args.url}: version {done['from']} restored as version {done['version']} "
          f"(fingerprint {done['fingerprint'] or '-'}; record {'restored' if done['record'] else 'not found'})")
    return 0
