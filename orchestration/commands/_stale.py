"""``retouch status s3://OUT --stale``: stale outputs grouped by cause."""

from __future__ import annotations

import json

from orchestration.revisions import by_cause, check_because, matches, scan
from orchestration.settings import load_settings
from orchestration.storage import Storage, StorageError


def report(args) -> int:
    if not (args.job.startswith("s3://") and args.stale):
        raise StorageError("staleness needs an output prefix and --stale: retouch status s3://OUT --stale")
    because = check_because(args.because)
    settings = load_settings()
    outputs = scan(Storage.from_settings(settings), args.job, settings.model_dir)
    chosen = [o for o in outputs if matches(o, because)]
    groups = by_cause(chosen)
    bucket = args.job[5:].partition("/")[0]
    if args.json:
        print(json.dumps({"outputs": len(outputs), "stale": len(chosen),
                          "causes": {c: [o.to_dict(bucket) for o in group] for c, group in groups.items()}},
                         indent=2))
        return 0
    print(f"{args.job}: {len(outputs)} outputs, {len(chosen)} stale"
          + (f" because {' and '.join(because)}" if because else ""))
    for cause, group in groups.items():
        print(f"  {cause}: {len(group)}")
        for o in group:
            detail = "; ".join(o.details.values())
            print(f"    s3://{bucket}/{o.key}  {o.fingerprint or '-'}" + (f"  ({detail})" if detail else ""))
    return 0
