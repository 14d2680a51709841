"""Build tiny, randomly initialised inpainting models to try the learned
inpainting path offline, on a CPU, in seconds (no weights are downloaded).

- ``--sd FOLDER``: a Stable Diffusion inpainting pipeline in diffusers'
  ``save_pretrained`` layout, from diffusers' own test recipe
  (``get_dummy_components``): a UNet2DConditionModel with 9 input channels
  (4 latent + 1 mask + 4 masked-image latent), an AutoencoderKL, a CLIP text
  encoder and a CLIP tokenizer built here from a byte-level vocabulary (the
  tests' hub repositories cannot be downloaded). Native size 64 px, ~8 MB.
- ``--lama FILE``: LaMa from spandrel's own architecture with random weights
  (LaMa has one fixed size: ~200 MB as .safetensors).

Random weights paint noise, not photos: these models prove the plumbing
(loading, crop and paste, seeds, prompts, routing), not quality.

    python examples/make_tiny_inpaint.py --sd ./tiny-sd-inpaint
    retouch models add ./tiny-sd-inpaint --name sd-inpaint
    retouch run img.png --out out --inpaint sd-inpaint --prompt "wood grain" --seed 4412
"""

from __future__ import annotations

import argparse
from pathlib import Path

# diffusers' dummy text encoder (tests/pipelines/stable_diffusion/test_stable_diffusion_inpaint.py)
TEXT_ENCODER = dict(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
                    num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000)
WORDS = ("wood", "grain", "shadow", "sky", "brick", "face", "preserve", "ambient", "and")


def tiny_tokenizer():
    """A CLIP tokenizer over the 256 byte-level symbols (alone and word-final),
    a few whole words with their merges, and CLIP's start/end tokens (< 1000 ids)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in WORDS:   # left-to-right merges: w+o, wo+o, woo+d</w>
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_sd_inpaint(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random StableDiffusionInpaintPipeline to ``folder``; returns it."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))
    pipe = StableDiffusionInpaintPipeline(unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
                                          vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_lama(path: str | Path, seed: int = 0) -> Path:
    """Save a random-weight LaMa (spandrel's architecture) to ``path`` (.safetensors); returns it."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(seed)
    state = LaMa(in_nc=4, out_nc=3).state_dict()
    path = Path(path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd", type=Path, help="write a tiny SD inpainting pipeline folder here")
    parser.add_argument("--lama", type=Path, help="write a random LaMa .safetensors file here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.sd and not args.lama:
        parser.error("give --sd FOLDER and/or --lama FILE")
    if args.sd:
        print(f"tiny SD inpainting pipeline: {build_sd_inpaint(args.sd, args.seed)}")
    if args.lama:
        print(f"random LaMa: {build_lama(args.lama, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
