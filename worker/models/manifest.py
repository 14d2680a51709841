"""The model store's manifest: one JSON file listing every model.

``<store>/manifest.json``::

    {"version": 1, "models": {"<name>": {
        "name", "task" ("upscale", "quality-metric", ...), "architecture",
        "scale", "backend" ("torch" | "ncnn" | "spandrel"), "file" (relative to
        the store), "sha256", "licence", "source", optional "files" (every file
        with its sha256, for multi-file models such as ncnn), "content",
        "description", "config"}}}

Writes are atomic (temp file + rename) so a reader never sees half a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from worker.errors import RetouchError
from worker.files import atomic_write

FILENAME = "manifest.json"
REQUIRED = ("name", "task", "architecture", "scale", "backend", "file", "sha256", "licence", "source")


class ManifestError(RetouchError):
    """The manifest is unreadable or an entry lacks a required field."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Manifest:
    """An in-memory manifest bound to a store directory; ``save()`` writes it."""

    def __init__(self, directory: str | os.PathLike, models: dict[str, dict] | None = None):
        self.directory = Path(directory)
        self.models: dict[str, dict] = dict(models or {})

    @property
    def path(self) -> Path:
        return self.directory / FILENAME

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Manifest":
        """The manifest of ``directory`` (empty if there is none yet).

        Raises ManifestError naming the file if it is not valid JSON of the expected shape."""
        path = Path(directory) / FILENAME
        if not path.is_file():
            return cls(directory)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ManifestError(f"{path}: expected {{'version': 1, 'models': {{name: entry}}}}")
        return cls(directory, data["models"])

    def get(self, name: str) -> dict | None:
        return self.models.get(name)

    def put(self, entry: dict) -> None:
        """Add or replace an entry; raises ManifestError naming missing fields."""
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ManifestError(f"manifest entry {entry.get('name', '?')!r} lacks {', '.join(missing)}")
        self.models[entry["name"]] = {k: v for k, v in entry.items() if k != "path"}

    def remove(self, name: str) -> None:
        self.models.pop(name, None)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": 1, "models": dict(sorted(self.models.items()))}, indent=2) + "\n"
        atomic_write(self.path, body.encode())
