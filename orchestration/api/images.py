"""The synchronous endpoints: one image in, one result out, in this process.

Each runs part of the one stage graph through the embedded executor
(``orchestration.local.restore``) with the plan ``retouch run`` would build
from the same settings, so the bytes are the same:

| endpoint | stages (``remove-text`` / ``upscale``) | response |
|---|---|---|
| ``/v1/detect-mask`` | detect | the mask document (JSON), or one map as a 16-bit PNG |
| ``/v1/inpaint`` | detect (unless a mask is given), unblend, inpaint, postprocess | the image |
| ``/v1/inpaint`` ``postprocess=false`` | ... up to inpaint | the raw fill, float32 TIFF |
| ``/v1/postprocess`` | postprocess of a given fill (detect only for a mask PNG) | the image |
| ``/v1/upscale`` | upscale | the image |

An image response carries its record (the sidecar ``retouch run`` writes,
without file paths) in ``X-Retouch-Record`` (compact JSON, when under 8 KiB)
plus ``X-Retouch-Fingerprint``, ``-Variants``, ``-Seed`` and ``-Timings``; with
``Accept: application/json`` it is ``{"image": base64, "media_type",
"filename", "record"}`` instead.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from orchestration.api import handoff, options
from orchestration.api.access import require_access
from orchestration.api.handoff import ImageRef
from orchestration.api.state import ApiState
from orchestration.local import Restored, restore
from worker.errors import PlanError, RetouchError
from worker.io import MIME, SUFFIX, Image, ImageError, decode, decode_map, encode, encode_map, format_name
from worker.pipeline.artifacts import PIXELS, Pixels
from worker.pipeline.plan import Plan, make_plan

router = APIRouter(prefix="/v1", dependencies=[Depends(require_access)], tags=["images"])

HEADER_LIMIT = 8 * 1024   # bytes of X-Retouch-Record: proxies commonly cap a header near 8 KiB
TIFF_FLOAT = "image/tiff"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

IMAGE_RESPONSES = {200: {"content": {"image/*": {}, "application/json": {}},
                         "description": "the image (record in X-Retouch-Record), or JSON with Accept: "
                                        "application/json"},
                   401: {"description": "missing or wrong bearer token"}, 413: {"description": "body too large"},
                   422: {"description": "bad image, mask or option (JSON error)"},
                   503: {"description": "busy, or the server's models are missing"},
                   504: {"description": "took longer than the request timeout"}}


@dataclass
class Upload:
    data: bytes
    name: str


@dataclass
class Reply:
    body: bytes
    media_type: str
    filename: str
    record: dict


def state_of(request: Request) -> ApiState:
    return request.app.state.retouch


def safe_name(filename: str | None, default: str) -> str:
    """A client's file name fit for messages and headers: its last path part,
    printable ASCII, at most 100 characters."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = _UNSAFE.sub("_", name).strip("._")[:100]
    return name or default


async def read(upload: UploadFile | None, default: str) -> Upload | None:
    if upload is None:
        return None
    return Upload(await upload.read(), safe_name(upload.filename, default))


# --- computing (in the gate's threads) ------------------------------------------

def _plan(st: ApiState, opts: options.Options, made: dict | None = None) -> Plan:
    """The Plan of ``opts``; ``made``: the mask parameters of a given mask
    document, which the plan takes (the mask is already made with them)."""
    fields = opts.plan_fields()
    for key, value in (made or {}).items():
        name = f"mask_{key}"
        if name in fields and fields[name] != value:
            raise options.OptionsError(f"mask.{key}={fields[name]} differs from the mask document's {value}: that "
                                       f"mask is already made; leave mask.{key} out")
        fields[name] = value
    return make_plan(st.settings.model_dir, device=st.settings.device, **fields)


def _decode_image(st: ApiState, image: Upload) -> Image:
    return decode(image.data, image.name, st.settings.max_pixels)


def _user_mask(mask: Upload, img: Image) -> np.ndarray:
    arr = decode_map(mask.data, mask.name)
    if arr.shape != img.rgb.shape[:2]:
        raise ImageError(mask.name, f"mask is {arr.shape[1]}x{arr.shape[0]} but the image {img.name} is "
                                    f"{img.size[0]}x{img.size[1]}")
    return arr


def _fill(st: ApiState, fill: Upload, img: Image) -> Pixels:
    exact = handoff.decode_exact(fill.data, fill.name, img.size)
    if exact is not None:
        return exact
    other = decode(fill.data, fill.name, st.settings.max_pixels)
    if other.size != img.size:
        raise ImageError(fill.name, f"fill is {other.size[0]}x{other.size[1]} but the image {img.name} is "
                                    f"{img.size[0]}x{img.size[1]}")
    return Pixels(other.rgb, other.alpha)


def _run(st: ApiState, image: Upload, opts: options.Options, *, mask: Upload | None = None,
         fill: Upload | None = None, until: str | None = None) -> tuple[Image, Restored, str, Plan]:
    """Decode, take the handed-over artifacts, build the plan, run the stages.
    Returns (input, result, input sha256, plan)."""
    try:
        img = _decode_image(st, image)
        sha = handoff.sha256(image.data)
        given, trace, user_mask = {}, None, None
        if mask is not None:
            if handoff.looks_like_json(mask.data):
                given, trace = handoff.read_mask_document(mask.data, mask.name, sha, img.size)
            else:
                user_mask = _user_mask(mask, img)
        if fill is not None:
            given["fill"] = _fill(st, fill, img)
        plan = _plan(st, opts, trace.details.get("mask_params") if trace is not None else None)
        restored = restore(img, plan, st.cache, user_mask, metrics=st.metrics, given=given, trace=trace,
                           until=until)
    except (options.OptionsError, PlanError):
        raise
    except RetouchError:
        st.metrics.image_finished("failed")
        raise
    st.metrics.image_finished("ok")
    return img, restored, sha, plan


def _image_reply(img: Image, restored: Restored, sha: str, plan: Plan, request_note: dict, started: float,
                 *, exact: bool = False) -> Reply:
    """The output bytes and the record (the sidecar of ``retouch run``, without paths)."""
    if exact:
        pixels = restored.artifacts.get("fill") or restored.artifacts[PIXELS]
        body, fmt, media = handoff.encode_exact(pixels), "TIFF-float32", TIFF_FLOAT
        suffix, width, height = ".fill.tif", pixels.rgb.shape[1], pixels.rgb.shape[0]
    else:
        body = encode(restored.image, plan.format, plan.quality)
        fmt = format_name(plan.format or img.format)
        media, suffix = MIME.get(fmt, "application/octet-stream"), SUFFIX.get(fmt, ".bin")
        width, height = restored.image.size
    record = restored.record
    record["input"]["sha256"] = sha
    record["output"] = {"sha256": handoff.sha256(body), "width": width, "height": height, "format": fmt}
    if request_note:
        record["request"] = request_note
    record["timings"]["total"] = round(time.perf_counter() - started, 4)
    return Reply(body, media, PurePosixPath(img.name).stem + suffix, record)


def _headers(reply: Reply) -> dict[str, str]:
    record = reply.record
    headers = {
        "X-Retouch-Fingerprint": str(record.get("fingerprint", "")),
        "X-Retouch-Seed": str(record.get("seed", "")),
        "X-Retouch-Variants": ";".join(f"{k}={v}" for k, v in record.get("variants", {}).items()),
        "X-Retouch-Timings": ";".join(f"{k}={v}" for k, v in record.get("timings", {}).items()),
        "Content-Disposition": f'inline; filename="{reply.filename}"',
    }
    compact = json.dumps(record, separators=(",", ":"), ensure_ascii=True, default=str)
    if len(compact) <= HEADER_LIMIT:
        headers["X-Retouch-Record"] = compact
    else:
        headers["X-Retouch-Record-Omitted"] = (f"{len(compact)} bytes, over {HEADER_LIMIT}: "
                                               "ask with Accept: application/json")
    return headers


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/" not in accept


def respond(request: Request, reply: Reply) -> Response:
    if _wants_json(request):
        return JSONResponse({"image": handoff.b64(reply.body), "media_type": reply.media_type,
                             "filename": reply.filename, "record": reply.record})
    return Response(reply.body, media_type=reply.media_type, headers=_headers(reply))


# --- endpoints ---------------------------------------------------------------

@router.post("/detect-mask", summary="Detect text: the confidence map, soft mask and mask statistics",
             responses={200: {"description": "the mask document (JSON); with output=mask|confidence the "
                                             "16-bit PNG"}, 422: {"description": "bad image or option"}})
async def detect_mask(
    request: Request,
    image: UploadFile = File(..., description="the image"),
    payload: str | None = Form(None, description="the seed's JSON payload (mask.type, mask.sigma, ...)"),
    mask_type: Literal["soft", "binary"] | None = Form(None, alias="mask.type"),
    mask_sigma: float | None = Form(None, alias="mask.sigma", description="feathering sigma, px"),
    mask_threshold: float | None = Form(None, alias="mask.threshold"),
    mask_dilate: int | None = Form(None, alias="mask.dilate"),
    image_id: str | None = Form(None),
    output: Literal["json", "mask", "confidence"] = Query("json", description="json: the mask document; "
                                                          "mask or confidence: that map as a 16-bit PNG"),
):
    """Run detection only. The JSON (save it as ``mask.json``) holds the
    confidence map and the soft mask as base64 16-bit PNGs (the files
    ``retouch run --save-masks`` writes), the mask statistics (coverage,
    confidence percentiles, regions, stroke width), the record, and the exact
    arrays ``/v1/inpaint`` and ``/v1/postprocess`` take back as ``mask``."""
    opts = options.parse(options.MaskOptions, payload, {
        "mask.type": mask_type, "mask.sigma": mask_sigma, "mask.threshold": mask_threshold,
        "mask.dilate": mask_dilate, "image_id": image_id})
    st, upload = state_of(request), await read(image, "image")
    started = time.perf_counter()

    def work():
        img, restored, sha, plan = _run(st, upload, opts, until="detect")
        record = restored.record
        record["input"]["sha256"] = sha
        if opts.request_note():
            record["request"] = opts.request_note()
        record["timings"]["total"] = round(time.perf_counter() - started, 4)
        if output != "json":
            body = encode_map(restored.artifacts["confidence" if output == "confidence" else "mask"])
            return Reply(body, "image/png", f"{PurePosixPath(img.name).name}.{output}.png", record)
        ref = ImageRef(name=img.name, sha256=sha, width=img.size[0], height=img.size[1])
        return handoff.mask_document(ref, restored.artifacts, restored.trace, record)

    result = await st.gate.run(work)
    if isinstance(result, Reply):
        return Response(result.body, media_type=result.media_type, headers=_headers(result))
    return JSONResponse(result)


@router.post("/inpaint", summary="Remove text: detect (or take a mask), inpaint, post-process",
             responses=IMAGE_RESPONSES, response_class=Response)
async def inpaint(
    request: Request,
    image: UploadFile = File(..., description="the image"),
    mask: UploadFile | None = File(None, description="optional: a mask PNG (white = remove; soft or binary), "
                                                     "or the mask document from /v1/detect-mask"),
    payload: str | None = Form(None, description="the seed's JSON payload: image_id, mask {type, sigma}, "
                                                 "prompt, scale, seed"),
    mask_type: Literal["soft", "binary"] | None = Form(None, alias="mask.type"),
    mask_sigma: float | None = Form(None, alias="mask.sigma", description="feathering sigma, px"),
    mask_threshold: float | None = Form(None, alias="mask.threshold"),
    mask_dilate: int | None = Form(None, alias="mask.dilate"),
    prompt: str | None = Form(None, description="what the fill should show (diffusion variants)"),
    negative_prompt: str | None = Form(None, description="what the fill should not show (diffusion variants)"),
    scale: float | None = Form(None, description="the seed's name for the denoising strength, (0, 1]"),
    strength: float | None = Form(None, description="denoising strength, (0, 1] (wins over scale)"),
    steps: int | None = Form(None, description="denoising steps (diffusion)"),
    guidance: float | None = Form(None, description="classifier-free guidance scale (diffusion)"),
    seed: int | None = Form(None),
    inpaint_variant: str | None = Form(None, alias="inpaint", description="auto or a variant (telea, ns, "
                                                                           "patchmatch, ...)"),
    postprocess: bool | None = Form(None, description="false: return the inpainter's raw fill (float32 TIFF) "
                                                      "for /v1/postprocess"),
    format: str | None = Form(None, description="output format (default: the input's)"),
    quality: int | None = Form(None),
    image_id: str | None = Form(None),
):
    """The image with text removed: the same bytes as ``retouch run --ops
    remove-text`` with the same settings (``--masks`` when a mask PNG is
    given; a mask document gives what detection gave)."""
    opts = options.parse(options.InpaintOptions, payload, {
        "mask.type": mask_type, "mask.sigma": mask_sigma, "mask.threshold": mask_threshold,
        "mask.dilate": mask_dilate, "prompt": prompt, "negative_prompt": negative_prompt, "scale": scale,
        "strength": strength, "steps": steps, "guidance": guidance, "seed": seed, "inpaint": inpaint_variant,
        "postprocess": postprocess, "format": format, "quality": quality, "image_id": image_id})
    st = state_of(request)
    upload, mask_upload = await read(image, "image"), await read(mask, "mask")
    raw = opts.postprocess is False
    started = time.perf_counter()

    def work() -> Reply:
        img, restored, sha, plan = _run(st, upload, opts, mask=mask_upload, until="inpaint" if raw else None)
        return _image_reply(img, restored, sha, plan, opts.request_note(), started, exact=raw)

    return respond(request, await st.gate.run(work))


@router.post("/postprocess", summary="Blend a fill into the image along the mask (colour continuity, soft edge)",
             responses=IMAGE_RESPONSES, response_class=Response)
async def postprocess(
    request: Request,
    image: UploadFile = File(..., description="the original image"),
    fill: UploadFile = File(..., description="the inpainted image: /v1/inpaint's raw fill (float32 TIFF, "
                                             "exact) or any image of the same size"),
    mask: UploadFile = File(..., description="the mask document from /v1/detect-mask, or a mask PNG"),
    payload: str | None = Form(None, description="JSON options (mask {type, sigma, ...}, seed, format)"),
    mask_type: Literal["soft", "binary"] | None = Form(None, alias="mask.type"),
    mask_sigma: float | None = Form(None, alias="mask.sigma"),
    mask_threshold: float | None = Form(None, alias="mask.threshold"),
    mask_dilate: int | None = Form(None, alias="mask.dilate"),
    seed: int | None = Form(None),
    format: str | None = Form(None),
    quality: int | None = Form(None),
    image_id: str | None = Form(None),
):
    """The post-process stage alone: low-frequency colour continuity inside
    the fill region, then the confidence-weighted blend. With the mask
    document and the raw fill of the same image, the result is the bytes
    ``/v1/inpaint`` (and ``retouch run``) give."""
    opts = options.parse(options.MaskOptions, payload, {
        "mask.type": mask_type, "mask.sigma": mask_sigma, "mask.threshold": mask_threshold,
        "mask.dilate": mask_dilate, "seed": seed, "format": format, "quality": quality, "image_id": image_id})
    st = state_of(request)
    upload, fill_upload, mask_upload = await read(image, "image"), await read(fill, "fill"), await read(mask, "mask")
    started = time.perf_counter()

    def work() -> Reply:
        img, restored, sha, plan = _run(st, upload, opts, mask=mask_upload, fill=fill_upload)
        return _image_reply(img, restored, sha, plan, opts.request_note(), started)

    return respond(request, await st.gate.run(work))


@router.post("/upscale", summary="Upscale with the measured choice of model, or a named variant",
             responses=IMAGE_RESPONSES, response_class=Response)
async def upscale(
    request: Request,
    image: UploadFile = File(..., description="the image"),
    payload: str | None = Form(None, description="the seed's JSON payload: strategy, target_scale"),
    strategy: str | None = Form(None, description="artifact-aware (retouch measures the image and chooses) "
                                                  "or a variant: lanczos, bicubic, realesrgan-x4plus, ..."),
    target_scale: float | None = Form(None, description="1 to 8 (default 4)"),
    no_hallucination: bool | None = Form(None, description="forensic: interpolation only"),
    seed: int | None = Form(None),
    format: str | None = Form(None),
    quality: int | None = Form(None),
    image_id: str | None = Form(None),
):
    """The upscaled image: the same bytes as ``retouch run --ops upscale
    --upscale auto|VARIANT --scale S``; the decision and its measured
    reasons are in the record."""
    opts = options.parse(options.UpscaleOptions, payload, {
        "strategy": strategy, "target_scale": target_scale, "no_hallucination": no_hallucination, "seed": seed,
        "format": format, "quality": quality, "image_id": image_id})
    st, upload = state_of(request), await read(image, "image")
    started = time.perf_counter()

    def work() -> Reply:
        img, restored, sha, plan = _run(st, upload, opts)
        return _image_reply(img, restored, sha, plan, opts.request_note(), started)

    return respond(request, await st.gate.run(work))
