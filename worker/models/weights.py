"""Reading weight files without running pickled code.

``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.ckpt``
with ``torch.load(weights_only=True)`` (tensors and plain containers only;
TorchScript archives and arbitrary objects are refused).
"""

from __future__ import annotations

from pathlib import Path

from worker.errors import RetouchError

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")


def read_state_dict(path: str | Path, error: type[RetouchError] = RetouchError) -> dict:
    """The tensors in ``path`` as a dict (on the CPU).

    Raises ``error`` naming the file for an unknown suffix, a file that needs
    full unpickling, or one that holds something other than a dict."""
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif suffix in (".pth", ".pt", ".ckpt"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, or a TorchScript archive
            raise error(f"{path}: cannot be loaded safely (weights_only=True refused it: "
                        f"{str(exc).splitlines()[0][:200]}); convert it to .safetensors") from None
    else:
        raise error(f"{path}: unsupported weight file type {suffix!r} (use {', '.join(SUFFIXES)})")
    if not isinstance(state, dict):
        raise error(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state
