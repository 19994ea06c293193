"""A local transformers causal LM (the text adapter's local backend) loaded through the cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from variant_pipeline.models.cache import MODEL_CACHE, ModelCache, resolve_hf_source
from variant_pipeline.models.device import resolve


class CausalLM(NamedTuple):
    """``model, tokenizer = load_causal_lm(...)`` unpacks like a pair."""

    model: Any  # a transformers PreTrainedModel (AutoModelForCausalLM)
    tokenizer: Any  # its tokenizer, with a chat template


def load_causal_lm(path: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
                   allow_network: bool | None = None, cache: ModelCache = MODEL_CACHE) -> CausalLM:
    """Load (once per process) a causal LM and its tokenizer from a directory or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_hf_source(path, "text (causal LM)", allow_network=allow_network)
    dev, dt = resolve(device, dtype)

    def _load() -> CausalLM:
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.padding_side = "left"  # batched generation needs the prompts right-aligned
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer at {source} has no chat template; the text adapter needs one")
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dt).to(dev).eval()
        return CausalLM(model, tokenizer)

    return cache.get_or_load("causal_lm", source, dev, dt, _load)
