"""What an output was made from, part by part, and its revision fingerprint.

An output's *lineage* names every part that decides its pixels:

- ``input``: the sha256 of the original's bytes;
- ``plan``: the plan's fingerprint (settings and software version);
- ``models``: each model the stages chose, by name, with the sha256 of its
  weights in the model store (``builtin`` for interpolators and classical
  inpainters, which have none);
- ``code``: each stage's declared code version (``Stage.code_version``).

Its ``fingerprint`` (16 hex chars) hashes them all: one revision of an output
per fingerprint. Because the parts are kept (in the JSON record), a later check
names the exact part that changed (``model=NAME``, ``code=STAGE``, ``input``,
``plan``) instead of only saying "different".
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from worker.models.manifest import Manifest, sha256_file

BUILTIN = "builtin"


def weights_digest(name: str, model_dir: str | None) -> str | None:
    """The sha256 of model ``name``'s weights as the store's manifest records
    them (several files: a hash of their hashes); None if the store has no such
    model. Reads the manifest only (never provisions or hashes weights)."""
    if not model_dir:
        return None
    try:
        entry = Manifest.load(Path(model_dir).expanduser()).get(name)
    except Exception:  # an unreadable manifest: the model cannot be named
        return None
    if not entry:
        return None
    files = entry.get("files")
    if files:
        joined = ",".join(f"{f['file']}:{f['sha256']}" for f in sorted(files, key=lambda f: f["file"]))
        return hashlib.sha256(joined.encode()).hexdigest()
    return entry.get("sha256")


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime: int) -> str:
    return sha256_file(path)


def file_digest(path: str | Path) -> str:
    """sha256 of a weights file shipped inside a package (the text detector), hashed once per process."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def fingerprint(input_sha256: str, plan: str, models: dict[str, str], code: dict[str, str]) -> str:
    payload = {"input": input_sha256, "plan": plan, "models": dict(sorted(models.items())),
               "code": dict(sorted(code.items()))}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lineage(input_sha256: str, plan: str, models: dict[str, str], code: dict[str, str]) -> dict:
    """The lineage record (JSON-able): the parts and their fingerprint."""
    return {"fingerprint": fingerprint(input_sha256, plan, models, code), "input": input_sha256, "plan": plan,
            "models": dict(sorted(models.items())), "code": dict(sorted(code.items()))}


def causes(recorded: dict, *, input_changed: bool, plan: str, models: dict[str, str | None],
           code: dict[str, str | None]) -> list[str]:
    """Why an output with lineage ``recorded`` is stale now, one short cause per
    changed part, sorted: ``input``, ``plan``, ``model=NAME``, ``code=STAGE``.
    ``models`` / ``code``: the current digest / version of each recorded name
    (None when it no longer exists). An empty list: up to date."""
    found = []
    if input_changed:
        found.append("input")
    if recorded.get("plan") != plan:
        found.append("plan")
    for name, digest in sorted(recorded.get("models", {}).items()):
        if digest != BUILTIN and models.get(name) != digest:
            found.append(f"model={name}")
    for stage, version in sorted(recorded.get("code", {}).items()):
        if code.get(stage) != version:
            found.append(f"code={stage}")
    return found
