"""A local transformers causal LM (the text adapter's local backend) loaded through the cache."""

from __future__ import annotations

from collections.abc import Sequence
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


@torch.inference_mode()
def generate_chat(lm: CausalLM, conversations: Sequence[Sequence[dict[str, str]]], *,
                  max_new_tokens: int = 256, min_new_tokens: int = 0, do_sample: bool = False,
                  temperature: float = 0.7, seed: int | None = None) -> list[str]:
    """One answer per conversation (a list of ``{"role", "content"}``), generated as one batch."""
    model, tok = lm
    prompts = [tok.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
               for c in conversations]
    # The template already carries any BOS it needs.
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                  do_sample=do_sample, pad_token_id=tok.pad_token_id)
    if do_sample:
        kwargs["temperature"] = temperature
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
