"""HFModel on a tiny random Llama and a BPE tokenizer built in the test: no weights are downloaded."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message
from promptopt.models.base import GenerationRequest, ScoreRequest
from promptopt.models.hf import HFModel, convert_once
from promptopt.testing.tiny import build_tiny_llama

# SmolLM2's template, including the default system prompt it injects when there is none.
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nDEFAULT SYSTEM PROMPT<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the cat sat on the mat and the dog ate the bone",
    "is the following review positive or negative? answer with one word.",
    "a wonderful, moving film. dull and far too long. i loved every minute.",
    "hello world, hello there; count to five: one two three four five",
]
CONTEXT = 96


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    # spread-out logits (initializer_range 0.2): no near-ties that float noise could flip
    return build_tiny_llama(path, CORPUS * 10, chat_template=TEMPLATE, max_positions=CONTEXT, initializer_range=0.2)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> HFModel:
    return HFModel(str(model_dir), device="cpu", batch_size=3)


def chat(user: str, system: str = "Answer briefly.") -> tuple[Message, ...]:
    return (Message("system", system), Message("user", user))


USERS = [
    "hello",
    "the cat sat on the mat and the dog",
    "count to five",
    "a wonderful film",
    "is it good?",
    "one two",
]


def one_by_one(model: HFModel, method: str, requests: list) -> list:
    """The reference: each request alone, its whole prompt run (no shared prefix)."""
    model.batch_size, model.min_prefix = 1, 0
    try:
        return [getattr(model, method)([r])[0] for r in requests]
    finally:
        model.batch_size, model.min_prefix = 3, 16


def test_identity(model: HFModel, model_dir: Path) -> None:
    assert model.name == f"hf:{model_dir}@float32"
    assert model.capabilities.score and model.capabilities.trainable
    assert model.capabilities.max_context == CONTEXT
    assert HFModel(str(model_dir), dtype="bfloat16", name="tiny").name == "tiny@bfloat16"


def test_bad_options(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        HFModel(str(model_dir), dtype="float8")
    with pytest.raises(ConfigError, match="batch_size"):
        HFModel(str(model_dir), batch_size=0)
    with pytest.raises(ConfigError, match="cannot load"):
        HFModel(str(model_dir / "missing"))


def test_template_default_system_prompt_never_injected(model: HFModel) -> None:
    without = model.encode((Message("user", "hello"),))
    assert without == model.encode(chat("hello", system=""))
    assert "DEFAULT" not in model.tokenizer.decode(without)


def test_greedy_batched_equals_one_by_one(model: HFModel) -> None:
    requests = [GenerationRequest(messages=chat(u), max_tokens=6 + i) for i, u in enumerate(USERS)]
    batched = model.generate(requests)
    assert batched == one_by_one(model, "generate", requests)
    for request, completion in zip(requests, batched, strict=True):
        assert completion.error is None
        assert completion.prompt_tokens == len(model.encode(request.messages))
        assert 1 <= completion.completion_tokens <= request.max_tokens


def test_sampling_is_seeded_per_request(model: HFModel) -> None:
    requests = [
        GenerationRequest(messages=chat(u), max_tokens=8, temperature=1.0, sample=s) for u in USERS[:3] for s in (0, 1)
    ]
    batched = model.generate(requests)
    assert batched == one_by_one(model, "generate", requests)
    assert model.generate(requests[::-1]) == batched[::-1]
    assert len({c.text for c in batched}) > 3  # different samples (and prompts) draw differently


def test_stop_strings_truncate(model: HFModel) -> None:
    request = GenerationRequest(messages=chat("hello"), max_tokens=12, temperature=1.0, sample=3)
    full = model.generate([request])[0].text
    assert len(full) >= 4, full
    stop = full[2:4]
    cut = model.generate([GenerationRequest(**{**request.__dict__, "stop": ("\u2603", stop)})])[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.completion_tokens <= model.generate([request])[0].completion_tokens


def test_generation_stops_once_a_label_is_complete(model: HFModel) -> None:
    request = GenerationRequest(messages=chat("hello"), max_tokens=12, temperature=1.0, sample=3)
    full = model.generate([request])[0]
    prefix = model.tokenizer.decode(model.tokenizer.encode(full.text, add_special_tokens=False)[:2])
    assert prefix and len(prefix) < len(full.text)
    labels = (prefix.strip().upper(), "\u2603 never generated")
    cut = model.generate([GenerationRequest(**{**request.__dict__, "labels": labels})])[0]
    assert cut.text.strip() == prefix.strip() and cut.completion_tokens < full.completion_tokens
    # a label that a longer label continues is not complete yet
    longer = (prefix.strip(), full.text.strip())
    assert model.generate([GenerationRequest(**{**request.__dict__, "labels": longer})])[0].text == full.text


def naive_logprob(model: HFModel, messages: tuple[Message, ...], continuation: str) -> float:
    """The continuation's log-probability from one unpadded forward pass over prompt + continuation."""
    text, prompt = model._render(messages)
    tokens = model._continuation(text, prompt, continuation)
    with torch.no_grad():
        logits = model.model(torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
    return sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))


def test_score_matches_naive_computation(model: HFModel) -> None:
    continuations = ("positive", "negative", "the cat sat on the mat", " hello world", "\n\nfive", "")
    requests = [ScoreRequest(messages=chat(u), continuations=continuations) for u in USERS]
    scores = model.score(requests)
    singles = one_by_one(model, "score", requests)
    for request, score, single in zip(requests, scores, singles, strict=True):
        assert score.logprobs == pytest.approx(single.logprobs, abs=5e-5)
        assert score.error is None
        assert score.prompt_tokens == len(model.encode(request.messages))
        expected = [naive_logprob(model, request.messages, c) for c in continuations]
        assert score.logprobs == pytest.approx(expected, abs=1e-4)
        assert score.logprobs[-1] == 0.0


def test_continuation_tokenized_with_the_prompt(model: HFModel) -> None:
    text, prompt = model._render(chat("hello"))
    joint = model.tokenizer(text + "the cat", add_special_tokens=False)["input_ids"]
    assert prompt + model._continuation(text, prompt, "the cat") == joint


def test_errors_are_isolated(model: HFModel) -> None:
    too_long = " ".join(["the cat sat on the mat"] * 30)
    requests = [GenerationRequest(messages=chat(u), max_tokens=4) for u in (USERS[0], too_long, USERS[1])]
    requests.append(GenerationRequest(messages=chat("hello"), max_tokens=0))
    out = model.generate(requests)
    assert [c.error is None for c in out] == [True, False, True, False]
    assert "context" in out[1].error and "max_tokens" in out[3].error
    assert out[0] == model.generate(requests[:1])[0]

    scores = model.score([ScoreRequest(messages=chat(u), continuations=("a b c",)) for u in (too_long, "hello")])
    assert scores[0].error and "context" in scores[0].error
    assert scores[1].error is None


def test_failing_batch_is_retried_one_by_one(model: HFModel, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [ScoreRequest(messages=chat(u), continuations=("yes", "no")) for u in USERS[:4]]
    expected = model.score(requests)
    run = model._score_batch

    def flaky(batch: list) -> list:
        if any(item.index == 1 for item in batch):
            raise RuntimeError("boom")
        return run(batch)

    monkeypatch.setattr(model, "_score_batch", flaky)
    scores = model.score(requests)
    assert [s.error for s in scores] == [None, "RuntimeError: boom", None, None]
    for i in (0, 2, 3):
        assert scores[i].logprobs == pytest.approx(expected[i].logprobs, abs=1e-5)


# -- shared-prefix KV reuse and memory-bounded batches ---------------------------------------------------
LONG_SYSTEM = "Is the following review positive or negative? Answer with one word. The cat sat on the mat."


def shared(user: str) -> tuple[Message, ...]:
    return chat(user, system=LONG_SYSTEM)


def test_requests_of_one_prompt_share_their_prefix(model: HFModel) -> None:
    model.clear_prefix_cache()
    requests = [ScoreRequest(messages=shared(u), continuations=("yes",)) for u in USERS]
    items = model._share_prefixes([_item(model, i, r) for i, r in enumerate(requests)])
    prefix = {it.prefix for it in items}
    assert len(prefix) == 1 and prefix.pop() >= len(model.tokenizer(LONG_SYSTEM)["input_ids"])
    mixed = [_item(model, 0, requests[0]), _item(model, 1, ScoreRequest(messages=chat("hello"), continuations=()))]
    assert [it.prefix for it in model._share_prefixes(mixed)] == [0, 0]  # nothing long in common


def _item(model: HFModel, index: int, request: ScoreRequest):
    from promptopt.models.hf import _Score

    text, ids = model._render(request.messages)
    continuations = tuple(tuple(model._continuation(text, ids, c)) for c in request.continuations)
    return _Score(index=index, ids=ids, continuations=continuations)


def test_prefix_cached_batched_and_unbatched_agree(model: HFModel) -> None:
    model.clear_prefix_cache()
    continuations = ("positive", "negative", "the cat sat on the mat")
    scores = [ScoreRequest(messages=shared(u), continuations=continuations) for u in USERS]
    gens = [GenerationRequest(messages=shared(u), max_tokens=8) for u in USERS]
    cached_scores, cached_gens = model.score(scores), model.generate(gens)
    assert model._prefixes  # the prefix was computed once and kept
    model.min_prefix = 0
    try:
        plain_scores, plain_gens = model.score(scores), model.generate(gens)
    finally:
        model.min_prefix = 16
    singles = one_by_one(model, "score", scores)
    assert cached_gens == plain_gens == one_by_one(model, "generate", gens)
    for a, b, c in zip(cached_scores, plain_scores, singles, strict=True):
        assert a.logprobs == pytest.approx(c.logprobs, abs=5e-5)
        assert b.logprobs == pytest.approx(c.logprobs, abs=5e-5)
        assert a.prompt_tokens == c.prompt_tokens


def test_kept_prefix_is_reused_by_later_calls_and_dropped_after_training(model: HFModel) -> None:
    model.clear_prefix_cache()
    requests = [ScoreRequest(messages=shared(u), continuations=("yes", "no")) for u in USERS]
    before = model.score(requests)
    kept = list(model._prefixes)
    lone = model.score(requests[:1])[0]  # one request alone reuses the kept prefix
    assert list(model._prefixes) == kept
    assert lone.logprobs == pytest.approx(before[0].logprobs, abs=5e-5)
    weight = model.model.get_input_embeddings().weight
    with torch.no_grad():
        weight.mul_(1.5)  # an in-place update, like an optimizer step
    try:
        changed = model.score(requests[:1])[0]
        assert changed.logprobs != pytest.approx(lone.logprobs, abs=1e-3)
        model.min_prefix = 0
        assert changed.logprobs == pytest.approx(model.score(requests[:1])[0].logprobs, abs=5e-5)
    finally:
        model.min_prefix = 16
        with torch.no_grad():
            weight.div_(1.5)


def test_memory_budget_splits_batches_without_changing_results(model_dir: Path) -> None:
    roomy = HFModel(str(model_dir), device="cpu")
    assert roomy.batch_size == 32 and roomy.memory_budget > 0
    requests = [ScoreRequest(messages=shared(u), continuations=("yes", "no no")) for u in USERS]
    items = roomy._share_prefixes([_item(roomy, i, r) for i, r in enumerate(requests)])
    assert len(list(roomy._batches(items))) == 1
    it = items[0]
    one_item = roomy._batch_bytes(1, it.rows, it.prefix, len(it.ids) - it.prefix, it.extra)
    tight = HFModel(str(model_dir), device="cpu", memory_budget=int(one_item * 2.5))
    assert 1 < len(list(tight._batches(items))) < len(items)
    for a, b in zip(roomy.score(requests), tight.score(requests), strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=5e-5)


def test_bad_batching_options(model_dir: Path) -> None:
    for options, field in (
        ({"batch_size": "big"}, "batch_size"),
        ({"memory_budget": 0}, "memory_budget"),
        ({"min_prefix": -1}, "min_prefix"),
    ):
        with pytest.raises(ConfigError, match=field):
            HFModel(str(model_dir), **options)


def test_fast_dtype_uses_bf16_only_with_native_support(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptopt.models import hf

    monkeypatch.setattr(hf, "cpu_has_bf16", lambda: False)
    assert HFModel(str(model_dir), device="cpu", dtype="fast").dtype == "float32"
    assert HFModel(str(model_dir), device="cpu").dtype == "float32"  # "auto": float32 on every CPU
    monkeypatch.setattr(hf, "cpu_has_bf16", lambda: True)
    assert HFModel(str(model_dir), device="cpu", dtype="fast").name.endswith("@bfloat16")
    assert HFModel(str(model_dir), device="cpu").dtype == "float32"


def test_demo_turns_are_the_shared_prefix_whose_kv_cache_is_reused(model: HFModel) -> None:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example

    demos = tuple(Example(id=f"d{i}", inputs={"q": f"demo question number {i}"}, target=f"a{i}") for i in range(3))
    prompt = Prompt(instruction="Answer the question.", template="{{ instruction }}\nQ: {{ q }}\nA:", demos=demos)
    turns = dataclasses.replace(prompt, demo_format="turns")
    queries = [Example(id=f"x{i}", inputs={"q": f"query {i}"}, target="") for i in range(3)]
    requests = [ScoreRequest(messages=turns.render(ex), continuations=("yes",)) for ex in queries]
    items = model._share_prefixes([_item(model, i, r) for i, r in enumerate(requests)])
    context = model.encode(turns.render_context())  # system + every demo turn
    assert {it.prefix for it in items} == {items[0].prefix}
    assert items[0].prefix >= len(context) - 4  # the demo turns (all but the assistant header tokens) are shared
    model.clear_prefix_cache()
    cached = model.score(requests)
    singles = one_by_one(model, "score", requests)
    for a, b in zip(cached, singles, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=5e-5)


# -- first-time conversion, raced by two processes ------------------------------------------------------------
RACE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from promptopt.models.base import GenerationRequest
    from promptopt.core.messages import Message
    from promptopt.models.hf import HFModel, convert_once
    from promptopt.testing.tiny import build_tiny_llama

    target, arrived, log, spec = (Path(a) for a in sys.argv[1:5])
    corpus, template = json.loads(spec.read_text())

    def build(tmp):
        with log.open("a") as f:
            f.write("converted\\n")
        while len(list(arrived.iterdir())) < 2:  # hold the lock until the other process comes to convert too
            time.sleep(0.01)
        build_tiny_llama(tmp, corpus, chat_template=template)

    (arrived / str(os.getpid())).touch()
    convert_once(target, {"model": "tiny"}, build)
    model = HFModel(str(target), device="cpu")
    print(repr(model.generate([GenerationRequest(messages=(Message("user", "hello"),), max_tokens=4)])[0].text))
    """
)


def test_two_processes_converting_one_model_at_once_convert_it_once(tmp_path: Path) -> None:
    target, arrived, log, spec = tmp_path / "models" / "tiny", tmp_path / "arrived", tmp_path / "log", tmp_path / "spec"
    arrived.mkdir()
    spec.write_text(json.dumps([CORPUS, TEMPLATE]))
    args = [sys.executable, "-c", RACE, str(target), str(arrived), str(log), str(spec)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert log.read_text().splitlines() == ["converted"]  # the other process waited for the lock, then reused it
    answers = [out.splitlines()[-1] for out, _ in outs]  # (the tokenizer trainer prints blank lines)
    assert answers[0] == answers[1] != "''"  # both loaded the one complete copy
    assert sorted(p.name for p in target.parent.iterdir()) == [".tiny.lock", "tiny"]


def test_conversion_replaces_a_stale_copy_and_what_a_killed_one_left(tmp_path: Path) -> None:
    target = tmp_path / "tiny"

    def weights(text: str) -> Callable[[Path], object]:
        return lambda tmp: (tmp / "weights").write_text(text)

    def fail(tmp: Path) -> None:
        raise RuntimeError("conversion failed")

    convert_once(target, {"v": 1}, weights("one"))
    convert_once(target, {"v": 1}, fail)  # up to date: nothing converted
    (tmp_path / ".tiny.0123456789ab.tmp").mkdir()  # as a conversion killed half-way leaves it
    convert_once(target, {"v": 2}, weights("two"))
    assert (target / "weights").read_text() == "two"
    with pytest.raises(RuntimeError, match="conversion failed"):
        convert_once(target, {"v": 3}, fail)
    assert (target / "weights").read_text() == "two"  # a failed conversion keeps the copy there was
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "tiny"]
