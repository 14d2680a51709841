"""The embedded runner: restore images in-process, with no servers.

:func:`restore` chains the steps for one decoded image; :func:`run_batch`
walks files and folders, writes outputs and JSON sidecars, skips work already
done, and keeps going when an image fails.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from worker.errors import RetouchError
from worker.files import atomic_write
from worker.io import EXTENSIONS, SUFFIX, Image, ImageError, decode, decode_map, encode, encode_map, format_name
from worker.pipeline import graph
from worker.pipeline.artifacts import IMAGE, PIXELS, Pixels
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.record import Context, Trace, build_record
from worker.pipeline.request import InpaintRequest, request_for

log = logging.getLogger(__name__)


@dataclass
class Restored:
    image: Image
    record: dict
    confidence: np.ndarray | None = None
    mask: np.ndarray | None = None
    artifacts: dict = field(default_factory=dict)   # every artifact by name, as the stages left them
    trace: Trace = field(default_factory=Trace)


def restore(img: Image, plan: Plan, cache: ModelCache, user_mask: np.ndarray | None = None,
            metrics=None, job: str | None = None, *, given: dict | None = None, trace: Trace | None = None,
            until: str | None = None, after: str | None = None) -> Restored:
    """Run the plan's stages (``worker.pipeline.graph``) on one image. Returns
    the output image (metadata kept) and the record: ops, decisions with
    reasons, seed, timings, mask stats.

    Resuming from earlier work (the HTTP API's chained calls): ``given``
    artifacts by name are taken as made, and a stage whose products are all
    among them is not run; ``trace`` is what the stages that made them
    reported (later stages read it, e.g. the mask statistics). ``after``:
    the stages up to the named one ran already (``given`` holds what they
    made, which may be less than they can make). ``until`` stops after the
    named stage."""
    ctx = Context(image=img.name, job=job, metrics=metrics,
                  trace=trace.model_copy(deep=True) if trace is not None else Trace())
    arts = {IMAGE: img, PIXELS: Pixels(img.rgb, img.alpha)}
    if user_mask is not None:
        arts["user_mask"] = user_mask
    arts.update(given or {})
    stages = graph.stages_for(plan)
    done = [s.name for s in stages].index(after) + 1 if after is not None else 0
    for i, stage in enumerate(stages):
        if i >= done and not (given and set(stage.produces) <= set(given)):
            graph.run_stage(stage, arts, plan, cache, ctx)
        if stage.name == until:
            break
    out = arts[PIXELS]
    return Restored(img.with_pixels(out.rgb, out.alpha), build_record(img, plan, ctx.trace),
                    arts.get("confidence"), arts.get("mask"), arts, ctx.trace)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- batch over files -------------------------------------------------------

@dataclass
class Outcome:
    source: Path
    status: str              # "ok" | "skipped" | "failed"
    output: Path | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


@dataclass
class Search:
    """What :func:`search` found: (file, root) pairs to restore, and every path
    the search met but could not read (a ``failed`` Outcome each, with its cause)."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)


def search(paths: Iterable[str | Path], exclude: Path | None = None) -> Search:
    """Named files as given; folders searched recursively (symbolic links
    followed) for known image extensions, hidden entries skipped, each folder in
    name order. A path that cannot be read, a dangling link and a link loop,
    named or met in a folder, is reported as failed rather than skipped."""
    found = Search()
    exclude = exclude.resolve() if exclude else None
    for raw in paths:
        path = Path(raw)
        st = _stat(path, found)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(path, path, exclude, found, frozenset({(st.st_dev, st.st_ino)}))
        elif stat.S_ISREG(st.st_mode):
            found.files.append((path, path.parent))
        else:   # reading a FIFO would block the batch
            found.failed.append(Outcome(path, "failed", error=f"{path}: {_not_regular(st)}"))
    return found


def discover(paths: Iterable[str | Path], exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """The files of :func:`search` alone (callers that report nothing)."""
    return search(paths, exclude).files


def _stat(path: Path, found: Search) -> os.stat_result | None:
    """``os.stat`` (links followed); a path that cannot be read is recorded as
    failed with its cause and gives None."""
    try:
        return os.stat(path)
    except OSError as exc:
        found.failed.append(Outcome(path, "failed", error=f"{path}: {_unreadable(path, exc)}"))
        return None


def _walk(folder: Path, root: Path, exclude: Path | None, found: Search, ancestors: frozenset) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        found.failed.append(Outcome(folder, "failed", error=f"{folder}: cannot read folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        st = _stat(path, found)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in ancestors:
                found.failed.append(Outcome(path, "failed", error=f"{path}: symbolic link loop (leads back to "
                                                                  f"{path.resolve()}, a folder above it)"))
            elif exclude is None or path.resolve() != exclude:
                _walk(path, root, exclude, found, ancestors | {(st.st_dev, st.st_ino)})
        elif path.suffix.lower() in EXTENSIONS and (exclude is None or exclude not in path.resolve().parents):
            if stat.S_ISREG(st.st_mode):
                found.files.append((path, root))
            else:
                found.failed.append(Outcome(path, "failed", error=f"{path}: {_not_regular(st)}"))


def _not_regular(st: os.stat_result) -> str:
    kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
    return f"not a regular file ({kind}), not read"


def _unreadable(path: Path, exc: OSError) -> str:
    """Why ``os.stat(path)`` failed, in words."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself)"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
    if exc.errno == errno.ENOENT:
        return "no such file or folder"
    return f"cannot read ({exc.strerror or exc})"


def _fit(name: str, tail: str = "") -> str:
    """``name + tail`` as a file name of at most 255 bytes: too long, the name
    is cut and a hash of it added, so distinct names stay distinct."""
    full = name + tail
    if len(full.encode()) <= _NAME_MAX:
        return full
    mark = "~" + hashlib.sha256(name.encode()).hexdigest()[:12]
    room = _NAME_MAX - len((mark + tail).encode())
    head = name.encode()[:room].decode("utf-8", "ignore")
    return head + mark + tail


_NAME_MAX = 255


def output_paths(source: Path, root: Path, out_dir: Path, fmt: str | None, src_format: str | None) -> dict[str, Path]:
    """The output (the input's name; with ``fmt``, its stem and the format's
    suffix), its sidecar ``<output name>.json``, and the maps, named from the
    full input name (``x.png.mask.png``, ``x.jpg.mask.png``: no collisions)."""
    rel = source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
    target_format = format_name(fmt or src_format or "PNG")
    base = out_dir / rel.parent
    suffix = source.suffix if not fmt and source.suffix.lower() in EXTENSIONS else SUFFIX.get(target_format, ".png")
    output = rel.name if suffix == source.suffix else _fit(rel.stem, suffix)
    return {
        "output": base / output,
        "sidecar": base / _fit(output, ".json"),
        "confidence": base / _fit(rel.name, ".confidence.png"),
        "mask": base / _fit(rel.name, ".mask.png"),
    }


def _already_done(paths: dict[str, Path], input_sha: str, fingerprint: str) -> bool:
    try:
        record = json.loads(paths["sidecar"].read_text())
        data = paths["output"].read_bytes()
    except (OSError, ValueError):
        return False
    return (record.get("input", {}).get("sha256") == input_sha and record.get("fingerprint") == fingerprint
            and record.get("output", {}).get("sha256") == sha256(data))


def process_file(source: Path, root: Path, out_dir: Path, plan: Plan, cache: ModelCache, *,
                 max_pixels: int, force: bool = False, save_masks: bool = False,
                 mask_dir: Path | None = None, metrics=None) -> Outcome:
    """Restore one file. Never raises for a bad image: the outcome says why."""
    start = time.perf_counter()
    try:
        data = source.read_bytes()
    except OSError as exc:
        return Outcome(source, "failed", error=f"{source}: cannot read file ({exc.strerror or exc})")
    input_sha = sha256(data)
    paths = output_paths(source, root, out_dir, plan.format, EXTENSIONS.get(source.suffix.lower()))
    if not force and _already_done(paths, input_sha, plan.fingerprint()):
        return Outcome(source, "skipped", paths["output"], seconds=time.perf_counter() - start)
    try:
        img = decode(data, str(source), max_pixels)
        user_mask = None
        mask_file = _user_mask_file(mask_dir, source) if mask_dir is not None else None
        if mask_file is not None:
            user_mask = decode_map(_read_mask(mask_file), str(mask_file))
        restored = restore(img, plan, cache, user_mask, metrics=metrics)
        out_bytes = encode(restored.image, plan.format, plan.quality)
    except RetouchError as exc:
        return Outcome(source, "failed", error=str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}",
                       seconds=time.perf_counter() - start)
    except Exception as exc:  # a bug or model failure on one image must not stop the batch
        log.exception("unexpected failure on %s", source)
        return Outcome(source, "failed", error=f"{source}: {type(exc).__name__}: {exc}",
                       seconds=time.perf_counter() - start)

    try:
        _write_outputs(source, paths, out_bytes, restored, plan, img, save_masks, start, input_sha)
    except OSError as exc:   # e.g. a full disk or a read-only output folder: this image fails, the batch goes on
        where = exc.filename or paths["output"]
        return Outcome(source, "failed", error=f"{source}: cannot write {where} ({exc.strerror or exc})",
                       seconds=time.perf_counter() - start)
    return Outcome(source, "ok", paths["output"], seconds=time.perf_counter() - start)


def _user_mask_file(mask_dir: Path, source: Path) -> Path | None:
    """``<image name>.png`` (``x.jpg.png``), else ``<image stem>.png``."""
    for candidate in (mask_dir / _fit(source.name, ".png"), mask_dir / f"{source.stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def _read_mask(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read the user mask ({exc.strerror or exc})") from None


def _write_outputs(source: Path, paths: dict[str, Path], out_bytes: bytes, restored: Restored, plan: Plan,
                   img: Image, save_masks: bool, start: float, input_sha: str) -> None:
    paths["output"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write(paths["output"], out_bytes)
    record = restored.record
    record["input"].update({"path": str(source), "sha256": input_sha})
    record["output"] = {"path": str(paths["output"]), "sha256": sha256(out_bytes),
                        "width": restored.image.size[0], "height": restored.image.size[1],
                        "format": format_name(plan.format or img.format)}
    if save_masks and restored.confidence is not None:
        atomic_write(paths["confidence"], encode_map(restored.confidence))
        atomic_write(paths["mask"], encode_map(restored.mask))
        record["artifacts"] = {"confidence": str(paths["confidence"]), "mask": str(paths["mask"])}
    record["timings"]["total"] = round(time.perf_counter() - start, 4)
    atomic_write(paths["sidecar"], json.dumps(record, indent=2, default=_json_default).encode())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def run_batch(files: list[tuple[Path, Path]], out_dir: Path, plan: Plan, cache: ModelCache, *,
              max_pixels: int, force: bool = False, save_masks: bool = False, mask_dir: Path | None = None,
              metrics=None, on_done: Callable[[Outcome], None] | None = None,
              requests: dict[str, InpaintRequest] | None = None, execute: Executor | None = None) -> BatchReport:
    """Restore ``files`` with ``plan``; an image with a request
    (``worker.pipeline.request``, matched by name or stem) uses the plan with
    the request's settings. ``execute`` restores the images (default: one at
    a time in this process with ``cache``; ``orchestration.parallel``: several
    at once); the report lists them in the order of ``files``."""
    outcomes: dict[int, Outcome] = {}

    def finished(index: int, outcome: Outcome) -> None:
        if metrics is not None:
            metrics.image_finished(outcome.status)
        if outcome.status == "failed":
            log.warning("%s", outcome.error)
        outcomes[index] = outcome
        if on_done:
            on_done(outcome)

    claimed: dict[Path, Path] = {}   # output -> the input that writes it
    items: list[Item] = []
    for index, (source, root) in enumerate(files):
        request = request_for(requests or {}, source)
        output = output_paths(source, root, out_dir, plan.format, EXTENSIONS.get(source.suffix.lower()))["output"]
        try:
            image_plan = request.apply(plan, cache.model_dir) if request is not None else plan
        except RetouchError as exc:   # e.g. a variant this store lacks: that image fails, the batch goes on
            finished(index, Outcome(source, "failed", error=f"{source}: request: {exc}"))
            continue
        if claimed.setdefault(output, source) != source:
            finished(index, Outcome(source, "failed", error=f"{source}: its output {output} is also the output of "
                                                           f"{claimed[output]}; with --format, names that differ "
                                                           "only in their extension collide: rename one"))
            continue
        items.append((index, source, root, image_plan))
    if execute is not None:
        options = {"out_dir": out_dir, "max_pixels": max_pixels, "force": force, "save_masks": save_masks,
                   "mask_dir": mask_dir}
        execute(items, options, finished)
        return BatchReport([outcomes[i] for i in sorted(outcomes)])
    for index, source, root, image_plan in items:
        finished(index, process_file(source, root, out_dir, image_plan, cache, max_pixels=max_pixels, force=force,
                                     save_masks=save_masks, mask_dir=mask_dir, metrics=metrics))
    return BatchReport([outcomes[i] for i in sorted(outcomes)])


# (index in the batch, source, root, the image's plan)
Item = tuple[int, Path, Path, Plan]
# restores items: (items, process_file's keyword arguments plus out_dir, finished(index, outcome))
Executor = Callable[[list[Item], dict, Callable[[int, Outcome], None]], None]
