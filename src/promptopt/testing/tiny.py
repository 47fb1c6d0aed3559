"""A tiny random Llama with a BPE tokenizer trained on the spot: HF-backend tests without downloading weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Special tokens, in id order: 0 end of text, 1 message start (bos), 2 message end (eos and pad)."""


def build_tiny_llama(
    path: str | Path,
    corpus: Sequence[str],
    *,
    chat_template: str,
    vocab_size: int = 320,
    max_positions: int = 128,
    initializer_range: float = 0.2,
    tie_word_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Save a 2-layer, 32-wide random ``LlamaForCausalLM`` and its tokenizer to ``path``; returns ``path``.

    The byte-level BPE tokenizer is trained on ``corpus`` (so it can spell anything) and uses
    ``chat_template``; the weights are drawn with ``torch.manual_seed(seed)``.
    """
    import tokenizers
    import torch
    import transformers

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=SPECIALS[1], eos_token=SPECIALS[2], pad_token=SPECIALS[2]
    )
    tokenizer.chat_template = chat_template
    ids = tokenizer.convert_tokens_to_ids(list(SPECIALS))
    assert isinstance(ids, list)  # a list of tokens gives a list of ids (transformers annotates int | list[int])
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=initializer_range,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=ids[1],
        eos_token_id=ids[2],
        pad_token_id=ids[2],
    )
    torch.manual_seed(seed)
    path = Path(path)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
