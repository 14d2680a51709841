"""Bring-your-own inpainting models in the model store.

``retouch models add PATH --name NAME`` recognises:

- a diffusers inpainting pipeline folder (``save_pretrained`` layout):
  ``backend: diffusers``, family ``diffusion`` (:mod:`worker.inpaint.diffusion`);
- a LaMa (or, with spandrel's extra architectures, MAT) weight file:
  ``backend: spandrel``, family ``lama`` (:mod:`worker.inpaint.lama`).

Both are recorded with ``task: inpaint``, their checksums, licence and source.
:func:`resolve` makes each one an inpaint variant by its name; every file is
verified against the manifest before a model loads (a missing or altered
file fails with its path and both checksums).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from worker.inpaint import diffusion, lama
from worker.inpaint.base import LoadOptions, ModelInpainter, UnsupportedInpainterError
from worker.models.store import ModelNotFound, ModelStoreError, open_store

FAMILIES = ("diffusion", "lama")    # the order auto prefers them in


def kind_of(path: str | Path) -> str | None:
    """"diffusion" for a pipeline folder, "lama" for a spandrel inpainting file, else None.
    Raises UnsupportedInpainterError for a single-file SD checkpoint (saying how to convert it)."""
    diffusion.refuse_single_file(path)
    if diffusion.is_pipeline_folder(path):
        return "diffusion"
    if lama.is_model_file(path):
        return "lama"
    return None


def add_model(model_dir: str | Path, path: str | Path, name: str | None = None, licence: str = "unknown",
              source: str | None = None) -> dict:
    """Add a pipeline folder or an inpainting weight file to the store; returns
    the manifest entry. Raises UnsupportedInpainterError naming ``path`` otherwise."""
    if Path(path).is_dir():
        return diffusion.add_pipeline(model_dir, path, name, licence, source)
    return lama.add_model(model_dir, path, name, licence, source)


def installed(model_dir: str | None) -> list[dict]:
    """The store's inpainting entries (name, family, ...), sorted by family
    preference then name; [] for a store that cannot be read."""
    try:
        entries = open_store(model_dir).entries()
    except ModelStoreError:
        return []
    found = [e for e in entries if e.get("task") == "inpaint" and e.get("family") in FAMILIES]
    return sorted(found, key=lambda e: (FAMILIES.index(e["family"]), e["name"]))


def _verified_folder(model_dir: str | None, name: str) -> Path:
    """The pipeline folder of ``name`` with every listed file verified."""
    store = open_store(model_dir)
    entry = store.entry(name)
    for spec in entry.get("files") or [{"file": entry["file"]}]:
        store.path(name, spec["file"])
    return store.directory / Path(entry["file"]).parent


def factory(name: str, entry: dict) -> Callable[[LoadOptions], ModelInpainter]:
    """The loader of a store entry (it verifies the files when called)."""
    if entry.get("family") == "diffusion":
        return lambda opts: diffusion.load(name, _verified_folder(opts.model_dir, name), opts, entry.get("variant"))
    if entry.get("family") == "lama":
        return lambda opts: lama.load(name, open_store(opts.model_dir).path(name), opts)
    raise UnsupportedInpainterError(f"model {name!r}: unknown inpainting family {entry.get('family')!r}")


def lookup(name: str, model_dir: str | None) -> dict | None:
    """The store's inpainting entry called ``name``, or None."""
    try:
        entry = open_store(model_dir).entry(name)
    except ModelNotFound:
        return None
    return entry if entry.get("task") == "inpaint" else None
