"""The embedded SmolLM2-135M-Instruct through HFModel: conversion cache, chat generation, label scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from promptopt.core.candidate import DEFAULT_SYSTEM
from promptopt.core.messages import Message
from promptopt.models import GenerationRequest, Model, ScoreRequest, get_model, hf

pytestmark = pytest.mark.integration

PROMPT = "Is the following review positive or negative? Answer with one word.\n\nReview: "
REVIEWS = [
    ("A wonderful, moving film. I loved every minute of it.", "positive"),
    ("Dull, far too long and painfully boring.", "negative"),
    ("Brilliant acting and a clever, funny plot.", "positive"),
    ("A complete waste of time and money.", "negative"),
    ("The best movie I have seen this year.", "positive"),
    ("Terrible dialogue and awful acting.", "negative"),
    ("Charming, warm and beautifully shot.", "positive"),
    ("I hated it and walked out halfway through.", "negative"),
    ("An absolute delight from start to finish.", "positive"),
    ("The plot makes no sense and the jokes fall flat.", "negative"),
]
LABELS = ("positive", "negative")


def review_requests() -> list[ScoreRequest]:
    return [
        ScoreRequest(messages=(Message("system", DEFAULT_SYSTEM), Message("user", PROMPT + text)), continuations=LABELS)
        for text, _ in REVIEWS
    ]


def predictions(model: Model) -> list[str]:
    scores = model.score(review_requests())
    assert all(s.error is None for s in scores)
    return [LABELS[max(range(len(LABELS)), key=s.logprobs.__getitem__)] for s in scores]


def test_conversion_cache_is_reused(smollm2: Model, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (smollm2_dir / "config.json").is_file() and (smollm2_dir / "chat_template.jinja").is_file()

    def no_conversion(*args: object) -> None:
        raise AssertionError("the converted copy should have been reused")

    monkeypatch.setattr(hf, "_convert_gguf", no_conversion)
    again = get_model("smollm2", cache_dir=smollm2_dir, dtype="float32")
    assert again.name == smollm2.name == "smollm2@float32"


def test_interrupted_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(hf.transformers.AutoTokenizer, "from_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        hf.load_smollm2(cache_dir=tmp_path / "smollm2")
    assert [p.name for p in tmp_path.iterdir()] == [".smollm2.lock"]  # no partial copy: only the conversion lock


def test_greedy_chat_generation(smollm2: Model) -> None:
    request = GenerationRequest(
        messages=(Message("system", DEFAULT_SYSTEM), Message("user", "What is the capital of France?")),
        max_tokens=24,
    )
    completion = smollm2.generate([request])[0]
    assert completion.error is None
    assert completion.text.strip() and "<|im" not in completion.text
    assert 0 < completion.completion_tokens <= 24


def test_label_scoring_sentiment(smollm2: Model, smollm2_dir: Path, record_property: pytest.RecordProperty) -> None:
    fp32 = predictions(smollm2)
    correct = sum(p == gold for p, (_, gold) in zip(fp32, REVIEWS, strict=True))
    bf16 = predictions(hf.load_smollm2(cache_dir=smollm2_dir, dtype="bfloat16"))
    agreement = sum(a == b for a, b in zip(fp32, bf16, strict=True)) / len(fp32)
    record_property("fp32_correct", correct)
    record_property("fp32_bf16_argmax_agreement", agreement)
    print(f"fp32 {correct}/{len(REVIEWS)} correct; fp32 vs bf16 argmax agreement {agreement:.2f}")
    assert correct >= 8
