"""Writing files so that a reader never sees half of one.

Every output, sidecar, map and model file goes through :func:`atomic_write`
(or :func:`atomic_copy`): the bytes go to a temporary file in the same folder,
then ``os.replace`` puts it in place. The temporary name is short and fixed in
length, so a legal 255-byte file name still has a legal temporary name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _temporary(path: Path):
    return tempfile.NamedTemporaryFile(dir=path.parent, prefix=".retouch-", suffix=".part", delete=False)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (the folder must exist)."""
    path = Path(path)
    with _temporary(path) as tmp:
        try:
            tmp.write(data)
        except BaseException:
            os.unlink(tmp.name)
            raise
    _place(tmp.name, path)


def atomic_copy(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``path`` atomically."""
    path = Path(path)
    with _temporary(path) as tmp, open(src, "rb") as source:
        try:
            shutil.copyfileobj(source, tmp, 1 << 20)
        except BaseException:
            os.unlink(tmp.name)
            raise
    _place(tmp.name, path)


def _place(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
