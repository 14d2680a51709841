"""The model store: provisioning writes a complete manifest with checksums,
is idempotent, and a missing or corrupt file fails with an error naming the
file (and both checksums); `retouch models list/verify` report it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestration.cli import main
from worker import upscale
from worker.models.manifest import REQUIRED, Manifest, sha256_file
from worker.models.store import ModelChecksumError, ModelFileMissing, ModelNotFound, ModelStoreError, open_store


@pytest.fixture()
def store_copy(realesrgan_store, tmp_path) -> Path:
    """A private copy of the session store (tests here break files)."""
    dest = tmp_path / "models"
    shutil.copytree(realesrgan_store, dest)
    return dest


def test_manifest_lists_every_model_with_checksums(realesrgan_store):
    manifest = Manifest.load(realesrgan_store)
    names = set(manifest.models)
    assert {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3", "realesrgan-x4plus-ncnn",
            "realesr-animevideov3-x2-ncnn", "realesr-animevideov3-x3-ncnn"} <= names
    for entry in manifest.models.values():
        assert all(entry.get(k) is not None for k in REQUIRED), entry
        for f in entry.get("files") or [{"file": entry["file"], "sha256": entry["sha256"]}]:
            assert sha256_file(realesrgan_store / f["file"]) == f["sha256"]
    x4 = manifest.get("realesrgan-x4plus")
    assert (x4["architecture"], x4["scale"], x4["backend"], x4["licence"]) == ("RRDBNet", 4, "torch", "BSD-3-Clause")
    assert manifest.get("realesr-animevideov3-x2-ncnn")["scale"] == 2
    assert {Path(f["file"]).suffix for f in manifest.get("realesrgan-x4plus-ncnn")["files"]} == {".param", ".bin"}


def test_provisioning_is_idempotent(store_copy):
    from worker.models.convert_ncnn import provision_realesrgan

    path = store_copy / "realesrgan-x4plus.safetensors"
    before = path.stat().st_mtime_ns
    entries = provision_realesrgan(store_copy)
    assert path.stat().st_mtime_ns == before
    assert {e["name"] for e in entries} >= {"realesrgan-x4plus", "realesr-animevideov3"}


def test_corrupt_weights_fail_with_the_file_and_both_checksums(store_copy):
    path = store_copy / "realesr-animevideov3.safetensors"
    expected = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumError) as err:
        upscale.create("realesr-animevideov3", upscale.UpscaleOptions(model_dir=str(store_copy)))
    message = str(err.value)
    assert str(path) in message and expected in message and sha256_file(path) in message


def test_missing_weights_fail_naming_the_file(store_copy):
    (store_copy / "ncnn" / "realesrgan-x4plus-anime.param").unlink()
    with pytest.raises(ModelFileMissing, match=r"realesrgan-x4plus-anime\.param: model file missing"):
        upscale.create("realesrgan-x4plus-anime-ncnn", upscale.UpscaleOptions(model_dir=str(store_copy)))
    # a model the store lacks: one line naming the store; a shipped one is provisioned on first use instead
    with pytest.raises(ModelNotFound, match=r"'not-shipped' is not in the model store .*make models"):
        open_store(store_copy / "empty").entry("not-shipped")
    upscale.create("realesr-animevideov3", upscale.UpscaleOptions(model_dir=str(store_copy / "empty")))
    from safetensors.numpy import load_file

    provisioned = load_file(open_store(store_copy / "empty").path("realesr-animevideov3"))   # checksum verified
    reference = load_file(store_copy / "realesr-animevideov3.safetensors")
    assert provisioned.keys() == reference.keys()
    assert all(np.array_equal(provisioned[k], reference[k]) for k in reference)


def test_models_list_and_verify(store_copy, capsys):
    assert main(["models", "--model-dir", str(store_copy), "list"]) == 0
    out = capsys.readouterr().out
    assert str(store_copy) in out and "realesrgan-x4plus" in out and "RRDBNet" in out and " ok " in out
    assert main(["models", "--model-dir", str(store_copy), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["status"] for m in listed["models"]} == {"ok"}
    (store_copy / "realesrgan-x4plus-anime.safetensors").write_bytes(b"truncated")
    assert main(["models", "--model-dir", str(store_copy), "verify"]) == 1
    out = capsys.readouterr().out
    assert "realesrgan-x4plus-anime: CHECKSUM MISMATCH" in out


def test_s3_store_is_refused_clearly():
    with pytest.raises(ModelStoreError, match="s3://bucket/models: S3 model stores are not implemented"):
        open_store("s3://bucket/models")
