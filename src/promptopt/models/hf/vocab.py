"""The vocabulary a discrete prompt may be written in (gradient-guided text prompts, soft-prompt projection).

A token may stand in a text prompt when it is not special (no chat-template or added special token), decodes to
printable text (no control characters, no half a UTF-8 character: ``\\ufffd``) and is not only whitespace. A
token *sequence* is usable only if it survives the round trip decode → re-encode unchanged, so the exported
text makes the model see exactly the tokens that were chosen (:func:`round_trips`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptopt.core._imports import require

torch = require("torch", extra="hf", feature="token vocabularies")


def allowed_tokens(tokenizer: Any, size: int) -> Any:
    """A boolean mask over the first ``size`` token ids (the embedding rows): the tokens a text prompt may use."""
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    mask = torch.zeros(size, dtype=torch.bool)
    for i in range(min(size, len(tokenizer))):
        if i in special:
            continue
        text = tokenizer.decode([i])
        mask[i] = bool(text.strip()) and "\ufffd" not in text and text.replace(" ", "").isprintable()
    return mask


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` alone (no special tokens added, special-token strings spelled as text)."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def round_trips(tokenizer: Any, ids: Sequence[int]) -> bool:
    """Whether ``ids`` decode to a text without surrounding whitespace that encodes back to ``ids`` exactly."""
    text = tokenizer.decode(list(ids))
    return text == text.strip() and encode_text(tokenizer, text) == list(ids)


def nearest_tokens(table: Any, vectors: Any, mask: Any | None = None) -> tuple[list[int], list[float]]:
    """For each row of ``vectors`` (n, dim), the id of the most cosine-similar row of the embedding ``table``
    (vocab, dim) among the ids ``mask`` allows (all when None), and that cosine similarity."""
    table = torch.nn.functional.normalize(table.detach().float(), dim=-1)
    vectors = torch.nn.functional.normalize(vectors.detach().float().to(table.device), dim=-1)
    similarity = vectors @ table.T
    if mask is not None:
        similarity[:, ~mask.to(table.device)] = -float("inf")
    best = similarity.max(-1)
    return [int(i) for i in best.indices], [float(v) for v in best.values]
