"""Revisions of outputs: which are stale and why, their history, and rollback.

Every output written by the cluster carries its lineage (the parts it was made
from, ``worker.pipeline.lineage``) in its JSON record and its revision
fingerprint in its S3 metadata. :func:`scan` reads the records under an output
prefix and compares each part with what the current store, code and input
would give: an output is stale when any part changed, and the causes name the
part (``model=NAME``, ``code=STAGE``, ``input``, ``plan``; ``unrecorded`` for
an output written before lineage was recorded).

On a versioned bucket each reprocess adds a version; :func:`history` lists an
output's versions with the metadata each carries, and :func:`rollback` copies
one back to the top (a new version, so the history stays whole), its JSON
record with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterator

from orchestration.storage import S3Url, Storage, StorageError, parse_url
from worker.detect import TextDetector, shipped_model_path
from worker.errors import RetouchError
from worker.pipeline import graph
from worker.pipeline.lineage import causes, file_digest, weights_digest
from worker.pipeline.plan import Plan
from worker.strokes import WEIGHTS as STROKE_WEIGHTS
from worker.strokes import StrokeSegmenter

log = logging.getLogger(__name__)

JOB_DIR = "_retouch/"


@dataclass
class Output:
    """One output under the scanned prefix, with why it is stale (``causes``,
    empty when up to date) and, per model cause, its weights before -> now."""

    key: str
    input: str
    record: dict
    causes: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        return (self.record.get("lineage") or {}).get("fingerprint")

    @property
    def stale(self) -> bool:
        return bool(self.causes)

    def to_dict(self, bucket: str) -> dict:
        return {"output": f"s3://{bucket}/{self.key}", "input": self.input, "fingerprint": self.fingerprint,
                "causes": self.causes, "details": self.details}


class Current:
    """What the parts are now: weights in the store, stage code versions (memoised per scan)."""

    def __init__(self, model_dir: str | None):
        self.model_dir = model_dir
        self._models: dict[str, str | None] = {}

    def model(self, name: str) -> str | None:
        if name not in self._models:
            digest = weights_digest(name, self.model_dir)
            if digest is None and name == TextDetector.name:
                digest = file_digest(shipped_model_path())
            elif digest is None and name == StrokeSegmenter.name:
                digest = file_digest(STROKE_WEIGHTS)
            self._models[name] = digest
        return self._models[name]


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "gone"


def check(storage: Storage, out_bucket: str, key: str, record: dict, current: Current) -> Output:
    """The staleness of one output from its record."""
    inp = record.get("input") or {}
    out = Output(key=key, input=inp.get("url", "?"), record=record)
    recorded = record.get("lineage")
    if not recorded:
        out.causes = ["unrecorded"]
        return out
    try:
        src = parse_url(inp["url"])
        meta = storage.head(src.bucket, src.prefix)
    except (KeyError, StorageError):
        meta = None
    if meta is None:
        out.causes = ["input-gone"]
        return out
    try:
        plan = Plan(**record.get("plan", {}))
        plan_fp, code = plan.fingerprint(), graph.code_versions(plan)
    except Exception:  # a plan this version cannot read any more
        plan_fp, code = None, {}
    models = {name: current.model(name) for name in recorded.get("models", {})}
    out.causes = causes(recorded, input_changed=meta.get("etag") != inp.get("etag"), plan=plan_fp,
                        models=models, code=code)
    for name, digest in recorded.get("models", {}).items():
        if f"model={name}" in out.causes:
            out.details[f"model={name}"] = f"weights {_short(digest)} -> {_short(models[name])}"
    return out


def records(storage: Storage, out: S3Url) -> Iterator[tuple[str, dict]]:
    """(output key, record) for every output under ``out`` (its ``.json`` record
    next to it; job manifests and artifacts under ``_retouch/`` are skipped)."""
    for obj in storage.list_objects(out):
        key = obj["Key"]
        rel = key[len(out.prefix) + 1:] if out.prefix else key
        if not key.endswith(".json") or rel.startswith(JOB_DIR):
            continue
        try:
            record = json.loads(storage.get(out.bucket, key))
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("output"), dict):
            yield key[:-len(".json")], record


def scan(storage: Storage, out_url: str, model_dir: str | None, src_url: str | None = None) -> list[Output]:
    """Every output under ``out_url`` (of inputs under ``src_url`` when given), with its causes."""
    out = parse_url(out_url)
    src = parse_url(src_url) if src_url else None
    current = Current(model_dir)
    found = []
    for key, record in records(storage, out):
        if src is not None and not _under(record.get("input", {}).get("url", ""), src):
            continue
        found.append(check(storage, out.bucket, key, record, current))
    return found


def _under(url: str, src: S3Url) -> bool:
    try:
        parsed = parse_url(url)
    except StorageError:
        return False
    return parsed.bucket == src.bucket and (not src.prefix or parsed.prefix.startswith(src.prefix + "/"))


def matches(output: Output, because: list[str]) -> bool:
    """Whether a stale output has every cause in ``because`` (``model=NAME``...)."""
    return output.stale and all(b in output.causes for b in because)


def check_because(because: list[str]) -> list[str]:
    for b in because:
        kind, _, name = b.partition("=")
        if b not in ("input", "plan", "unrecorded", "input-gone") and not (kind in ("model", "code") and name):
            raise RetouchError(f"--because {b!r}: expected model=NAME, code=STAGE, input or plan")
    return because


def by_cause(outputs: list[Output]) -> dict[str, list[Output]]:
    """Stale outputs grouped by their exact set of causes (``model=a,code=b``)."""
    groups: dict[str, list[Output]] = {}
    for o in outputs:
        if o.stale:
            groups.setdefault(",".join(o.causes), []).append(o)
    return dict(sorted(groups.items()))


# --- history and rollback ---------------------------------------------------

def history(storage: Storage, url: str) -> list[dict]:
    """The versions of one output, newest first: version, date, job, models,
    fingerprint (revision), size, latest."""
    where = parse_url(url)
    if not where.prefix:
        raise StorageError(f"{url}: name an output object (s3://BUCKET/KEY)")
    rows = []
    for v in storage.versions(where.bucket, where.prefix):
        meta = storage.head_version(where.bucket, where.prefix, v["VersionId"]) or {}
        rows.append({"version": v["VersionId"], "date": v["LastModified"].isoformat(timespec="seconds"),
                     "job": meta.get("retouch-job"), "models": meta.get("retouch-models"),
                     "fingerprint": meta.get("retouch-revision"), "size": v.get("Size", 0),
                     "latest": bool(v.get("IsLatest"))})
    if not rows:
        raise StorageError(f"{url}: no such object (or no versions of it)")
    return rows


def rollback(storage: Storage, url: str, version: str) -> dict:
    """Copy version ``version`` of the output at ``url`` to the top, and the
    version of its JSON record with the same fingerprint. Returns what was done."""
    where = parse_url(url)
    if not where.prefix:
        raise StorageError(f"{url}: name an output object (s3://BUCKET/KEY)")
    meta = storage.head_version(where.bucket, where.prefix, version)
    if meta is None:
        raise StorageError(f"{url}: no version {version} (see `retouch history {url}`)")
    new = storage.copy_version_to_top(where.bucket, where.prefix, version)
    done = {"output": url, "from": version, "version": new, "fingerprint": meta.get("retouch-revision"),
            "record": None}
    record_key = where.prefix + ".json"
    revision = meta.get("retouch-revision")
    for v in storage.versions(where.bucket, record_key) if revision else []:
        rmeta = storage.head_version(where.bucket, record_key, v["VersionId"]) or {}
        if rmeta.get("retouch-revision") == revision:
            if not v.get("IsLatest"):
                storage.copy_version_to_top(where.bucket, record_key, v["VersionId"])
            done["record"] = f"s3://{where.bucket}/{record_key}"
            break
    return done
