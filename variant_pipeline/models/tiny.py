"""The tiny offline model bundle: random-weight models of every family, saved with each library's
own save call so the project loads them through exactly the production loading calls.

Layout under the bundle directory (declared per family in ``models.registry``; the settings'
defaults point at it)::

    llava/            LlavaForConditionalGeneration + LlavaProcessor
    yolo/yolov8n.pt   ultralytics YOLOv8n (the scale comes from the file name)
    sd-text2img/      diffusers StableDiffusionPipeline
    sd-inpaint/       diffusers StableDiffusionInpaintPipeline
    causal-lm/        LlamaForCausalLM + tokenizer with a chat template

Everything is deterministic (fixed torch seed) and needs no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from variant_pipeline.models.tokenizer import build_tokenizer

SEED = 1234


def _tokenizer(out_dir: Path):
    """Train the shared tokenizer into ``out_dir`` and load it back the production way."""
    from transformers import AutoTokenizer

    build_tokenizer(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def build_tiny_causal_lm(out_dir: Path) -> Path:
    """A tiny random ``LlamaForCausalLM`` and its chat-template tokenizer, saved in ``out_dir``.

    ``out_dir`` is the model's own directory (the bundle uses ``<bundle>/causal-lm``); returns it.
    Load it with ``variant_pipeline.models.causal_lm.load_causal_lm(path)``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tok = _tokenizer(out_dir)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir


# A LLaVA-1.5-style chat template ("USER: <image>\n... ASSISTANT:"), so the tiny processor goes
# through ``apply_chat_template`` exactly like ``llava-hf/llava-1.5-7b-hf``'s processor does.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_llava(out_dir: Path, *, image_size: int = 32, patch_size: int = 8) -> Path:
    """A tiny random ``LlavaForConditionalGeneration`` (CLIP vision + Llama) with a matching processor."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out_dir = Path(out_dir)
    tok = _tokenizer(out_dir)
    torch.manual_seed(SEED)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    # The processor must expand <image> into exactly as many tokens as the vision tower yields:
    # (image / patch)^2 patches + 1 CLS, minus the CLS that the "default" strategy drops.
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tok, patch_size=patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_yolo(out_file: Path) -> Path:
    """A random-weight YOLOv8n with the COCO class names, saved with ``YOLO.save``.

    The file name must start with ``yolov8n``: ultralytics takes the model scale from it.
    """
    from ultralytics import YOLO
    from ultralytics.utils import ROOT, YAML

    out_file = Path(out_file)
    if not out_file.name.startswith("yolov8n"):
        raise ValueError(f"tiny YOLO file name must start with 'yolov8n' (the scale), got {out_file.name}")
    torch.manual_seed(SEED)
    model = YOLO("yolov8n.yaml")  # builds from the bundled config, no download
    # A config-built model names its classes "0".."79"; give it COCO's names like the released weights.
    model.model.names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    model.save(out_file)
    return out_file


def _tiny_sd_parts(tok_dir: Path, *, unet_in_channels: int) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    tok = AutoTokenizer.from_pretrained(tok_dir, model_max_length=77)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=unet_in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32,
    )
    # Four blocks: the usual 8x latent downscale, so a 256 px image denoises at 32x32.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tok, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_tiny_text2img(out_dir: Path) -> Path:
    """A tiny random ``StableDiffusionPipeline`` (DDIM), saved with ``save_pretrained``."""
    from diffusers import StableDiffusionPipeline

    out_dir = Path(out_dir)
    tok_dir = build_tokenizer(out_dir / "_tokenizer")
    pipe = StableDiffusionPipeline(**_tiny_sd_parts(tok_dir, unet_in_channels=4))
    _drop_scratch(tok_dir)
    pipe.save_pretrained(out_dir)
    return out_dir


def build_tiny_inpaint(out_dir: Path) -> Path:
    """A tiny random ``StableDiffusionInpaintPipeline`` (UNet with 9 input channels)."""
    from diffusers import StableDiffusionInpaintPipeline

    out_dir = Path(out_dir)
    tok_dir = build_tokenizer(out_dir / "_tokenizer")
    pipe = StableDiffusionInpaintPipeline(**_tiny_sd_parts(tok_dir, unet_in_channels=9))
    _drop_scratch(tok_dir)
    pipe.save_pretrained(out_dir)
    return out_dir


def build_tiny_bundle(out_dir: Path) -> dict[str, Path]:
    """Build every registered family's tiny models under ``out_dir``; returns ``{settings field:
    path}`` (``vlm_model``, ``detector_model``, ...), the layout whose paths are the settings' defaults."""
    from variant_pipeline.models.registry import FAMILIES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for fam in FAMILIES:
        if fam.build_tiny is not None:
            paths.update(fam.build_tiny(out_dir))
    _write_manifest(out_dir, paths)
    return paths


def _drop_scratch(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)


def _write_manifest(root: Path, paths: dict[str, Path]) -> None:
    manifest = {k: str(v.relative_to(root)) for k, v in paths.items()}
    (root / "bundle.json").write_text(json.dumps({"seed": SEED, "models": manifest}, indent=2))
