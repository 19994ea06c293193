"""An offline tokenizer for the tiny model bundle.

A byte-level BPE trained with ``tokenizers`` on a small built-in corpus (English and Korean), saved as
a ``PreTrainedTokenizerFast`` so that ``AutoTokenizer.from_pretrained`` loads it like any hub
tokenizer. Byte-level means every string (Hangul included) round-trips, whatever the corpus covered.
"""

from __future__ import annotations

from pathlib import Path

BOS, EOS, PAD, UNK, IMAGE = "<s>", "</s>", "<pad>", "<unk>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, IMAGE)

# A chat template in the common Jinja form; the tiny causal LM and the text adapter use it through
# ``tokenizer.apply_chat_template``.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_CORPUS: tuple[str, ...] = (
    "USER: <image>\nDescribe the product in this image. ASSISTANT: A bowl of spicy kimchi stew.",
    "Match Score: 8/10. Logical Consistency: Yes. Mismatch Detected: No. Overall Assessment: Suitable.",
    '{"on_brief": true, "occlusion": false, "contrast_ok": true, "cta_present": false, "issues": []}',
    '{"font_style": "sans-serif", "font_name": "Noto Sans CJK KR", "font_size_category": "large"}',
    "font_color_hex FFFFFF 000000 reasoning contrast background text overlay advertisement brief",
    "Fresh, warm and comforting. Order now! Limited time only. Perfect for a cold winter evening.",
    "The image shows a plate of fried chicken on a wooden table with a dark background.",
    "매콤한 김치찌개", "따뜻한 겨울 한정 메뉴", "바삭한 치킨", "신선한 샐러드", "달콤한 디저트",
    "지금 주문하세요", "한국어 광고 문구", "맛있는 음식 사진", "인스타그램 피드 해시태그",
    "#맛집 #먹스타그램 #foodie #instagood #delicious",
    "Translate the Korean description into natural English marketing copy.",
    '{"translation_en": "A hearty stew", "ad_copy": "따뜻한 한 그릇", "hashtags": ["#food"]}',
)


def build_tokenizer(out_dir: Path, *, vocab_size: int = 512, model_max_length: int = 2048) -> Path:
    """Train and save the tokenizer under ``out_dir``; returns ``out_dir``. Deterministic, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus a few times so merges have counts above 1 (deterministic order).
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=model_max_length,
        padding_side="left",  # decoder-only generation batches pad on the left
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir
