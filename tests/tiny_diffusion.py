"""A tiny random-weight Stable Diffusion pipeline, built from configs and saved the way a real
download is laid out (save_pretrained folder), plus the same weights as a single-file checkpoint
in the original (LDM) key layout that `from_single_file` converts.

Nothing here touches the network: the CLIP tokenizer's vocabulary is made here.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

WORDS = ("a photo of an astronaut riding horse on mars cat dog red blue green painting sunset "
         "city forest sea mountain portrait blurry ugly low quality").split()


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for token in letters + [f"{c}</w>" for c in letters] + [f"{w}</w>" for w in WORDS]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in WORDS:  # merges that build each word from its letters, left to right
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>", model_max_length=77)


def tiny_pipeline(seed: int = 0, channels: tuple[int, int] = (32, 64)):
    """StableDiffusionPipeline with a 2-level UNet (32, 64 channels), a 2-level VAE and a 2-layer CLIP.
    `channels`: the UNet's block widths; wider (e.g. (256, 512)) makes the weights matter in benches."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=tuple(channels), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_pipeline(folder: Path, seed: int = 0, channels: tuple[int, int] = (32, 64)) -> Path:
    """The tiny pipeline saved with save_pretrained (safetensors), as a hub download is laid out."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        tiny_pipeline(seed, channels).save_pretrained(folder, safe_serialization=True)
    return folder


def config_only_copy(folder: Path, target: Path) -> Path:
    """The folder's configs, tokenizer and scheduler without any weights: what `config=` of
    from_single_file needs (a real model's config repo, downloaded with only *.json and *.txt)."""
    target = Path(target)
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt"):
            out = target / path.relative_to(folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
    return target


# ------------------------------------------------- diffusers -> original (LDM) single-file layout

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def _unet_to_ldm(state: dict, config: dict) -> dict:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    n = config["layers_per_block"]
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key in fixed:
            ldm = fixed[key]
        elif parts[0] == "down_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                ldm = f"input_blocks.{1 + b * (n + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                ldm = f"input_blocks.{1 + b * (n + 1) + j}.1.{rest}"
            else:  # downsamplers.0.conv.weight
                ldm = f"input_blocks.{1 + b * (n + 1) + n}.0.op.{parts[-1]}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            ldm = (f"middle_block.{2 * j}.{_resnet(rest)}" if kind == "resnets"
                   else f"middle_block.1.{rest}")
        elif parts[0] == "up_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                ldm = f"output_blocks.{b * (n + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                ldm = f"output_blocks.{b * (n + 1) + j}.1.{rest}"
            else:  # upsamplers.0.conv.weight
                slot = 2 if up_has_attention[b] else 1
                ldm = f"output_blocks.{b * (n + 1) + n}.{slot}.conv.{parts[-1]}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + ldm] = value
    return out


_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _vae_to_ldm(state: dict, config: dict) -> dict:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    levels = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        coder = parts[0]
        if key in fixed:
            ldm = fixed[key]
        elif parts[1] in ("down_blocks", "up_blocks"):
            i, kind = int(parts[2]), parts[3]
            level = i if parts[1] == "down_blocks" else levels - 1 - i
            name = "down" if parts[1] == "down_blocks" else "up"
            if kind == "resnets":
                rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                ldm = f"{coder}.{name}.{level}.block.{parts[4]}.{rest}"
            else:  # downsamplers.0.conv.* / upsamplers.0.conv.*
                sample = "downsample" if name == "down" else "upsample"
                ldm = f"{coder}.{name}.{level}.{sample}.conv.{parts[-1]}"
        elif parts[1] == "mid_block":
            rest = ".".join(parts[4:])
            if parts[2] == "resnets":
                ldm = f"{coder}.mid.block_{int(parts[3]) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                for new, old in _VAE_ATTENTION:
                    if rest.startswith(new + "."):
                        rest = old + rest[len(new):]
                        break
                ldm = f"{coder}.mid.attn_1.{rest}"
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        out["first_stage_model." + ldm] = value
    return out


def save_single_file(folder: Path, path: Path) -> Path:
    """The saved tiny pipeline's weights as one original-layout .safetensors checkpoint."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder, path = Path(folder), Path(path)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    checkpoint = _unet_to_ldm(unet.state_dict(), json.loads((folder / "unet" / "config.json").read_text()))
    checkpoint.update(_vae_to_ldm(vae.state_dict(), json.loads((folder / "vae" / "config.json").read_text())))
    for key, value in text_encoder.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    return path
