"""The tiny offline model bundle: random-weight models of every family, saved with each library's
own save call so the project loads them through exactly the production loading calls.

Layout under the bundle directory (matching ``config.load_settings`` defaults)::

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


def _write_manifest(root: Path, paths: dict[str, Path]) -> None:
    manifest = {k: str(v.relative_to(root)) for k, v in paths.items()}
    (root / "bundle.json").write_text(json.dumps({"seed": SEED, "models": manifest}, indent=2))
