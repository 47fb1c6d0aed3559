"""Token gradients, the prompt vocabulary and soft-prompt projection on the tiny random Llama (no downloads)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from promptopt.core.task import Task
from promptopt.models.base import ScoreRequest
from promptopt.models.hf import HFModel
from promptopt.models.hf.vocab import allowed_tokens, encode_text, round_trips
from promptopt.models.projection import project_soft_prompt, projected_prompt
from promptopt.models.token_gradients import SPAN, Row, SpanModel, ranked_swaps, sample_swaps, token_gradients
from promptopt.testing.contract_cases import animal_task, tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFModel:
    model = tiny_model(tmp_path_factory.mktemp("tiny"))
    assert isinstance(model, HFModel)
    return model


@pytest.fixture(scope="module")
def copier(tiny: HFModel) -> HFModel:
    """The tiny Llama rewired so its first layer adds the mean of all (unit-norm) input embeddings to every position
    (uniform attention, identity value/output maps, no MLPs, second layer off): the logit of a token grows with how
    often it appears in the prompt, so the best single-token swap towards a fixed answer is that answer token."""
    model = HFModel(str(Path(tiny.model.name_or_path)), device="cpu")
    with torch.no_grad():
        table = model.model.get_input_embeddings().weight  # tied to the output layer
        table[:, 16:] = 0  # the value path of a 2-KV-head layer carries 16 dimensions
        table.copy_(torch.nn.functional.normalize(table, dim=-1))
        for i, layer in enumerate(model.model.model.layers):
            attention = layer.self_attn
            for weight in (attention.q_proj, attention.k_proj, attention.o_proj, layer.mlp.down_proj):
                weight.weight.zero_()
            attention.v_proj.weight.copy_(torch.eye(16, 32))
            if i == 0:  # heads 0 and 2 read KV heads 0 and 1: dimensions 0-7 and 8-15 back to their place
                attention.o_proj.weight[0:8, 0:8] = torch.eye(8)
                attention.o_proj.weight[8:16, 16:24] = torch.eye(8)
    return model


def rows(task: Task, target: str | None = None) -> list[Row]:
    spanned = dataclasses.replace(task.seed_prompt(), instruction=SPAN)
    return [Row(spanned.render(ex), target or ex.answer) for ex in task.train]


def span_loss(model: HFModel, ids: list[int], batch: list[Row]) -> float:
    """The task loss with the instruction ``ids`` (no gradient)."""
    span = SpanModel(model, len(ids))
    span.text = model.tokenizer.decode(ids)
    with torch.no_grad():
        span.embeddings = model.model.get_input_embeddings().weight[torch.tensor(ids)]
        return float(span.nll([(r.messages, r.target) for r in batch])[0])


def test_the_token_gradient_ranks_the_known_best_substitution_first(copier: HFModel) -> None:
    task, tok = animal_task(), copier.tokenizer
    (answer,) = encode_text(tok, "cat")
    batch = rows(task, target="cat")  # every example's answer is the token "cat"
    ids = encode_text(tok, task.instruction)
    allowed = allowed_tokens(tok, 300)
    grad = token_gradients(copier, ids, batch).grad
    before = span_loss(copier, ids, batch)
    for pos in range(len(ids)):
        assert ranked_swaps(grad, ids, pos, allowed)[0] == answer, f"position {pos}"
        swaps = {t: span_loss(copier, [*ids[:pos], t, *ids[pos + 1 :]], batch) for t in range(300) if allowed[t]}
        swaps.pop(ids[pos], None)
        assert min(swaps, key=lambda t: swaps[t]) == answer  # exhaustively the best swap there, too
        assert swaps[answer] < before


def test_the_span_loss_is_the_label_log_likelihood(tiny: HFModel) -> None:
    """The differentiable path (instruction rows in place of its tokens) reads what label scoring reads."""
    task = animal_task()
    ids = encode_text(tiny.tokenizer, task.instruction)
    batch = rows(task)
    seed = task.seed_prompt()
    scores = tiny.score([ScoreRequest(messages=seed.render(ex), continuations=(ex.answer,)) for ex in task.train])
    expected = -sum(s.logprobs[0] for s in scores) / len(scores)
    assert span_loss(tiny, ids, batch) == pytest.approx(expected, abs=1e-4)
    result = token_gradients(tiny, ids, batch, fluency_weight=1.0)
    assert result.loss == pytest.approx(expected, abs=1e-4)
    assert result.grad.shape == (len(ids), tiny.model.get_input_embeddings().num_embeddings)
    assert result.fluency > 0 and result.tokens > 0


def test_an_answer_after_a_context_is_scored_given_that_context(tiny: HFModel) -> None:
    """GReaTer's loss: the answer after the model's own reasoning, not the reasoning's own likelihood."""
    task = animal_task()
    ids = encode_text(tiny.tokenizer, task.instruction)
    plain = rows(task)
    context = [dataclasses.replace(r, context="word: ") for r in plain]
    joint = [dataclasses.replace(r, target=f"word: {r.target}") for r in plain]
    only_context = [dataclasses.replace(r, target="word: ") for r in plain]
    expected = span_loss(tiny, ids, joint) - span_loss(tiny, ids, only_context)
    assert token_gradients(tiny, ids, context).loss == pytest.approx(expected, abs=1e-4)


def test_candidates_survive_the_round_trip_and_avoid_special_tokens(tiny: HFModel) -> None:
    tok = tiny.tokenizer
    allowed = allowed_tokens(tok, 300)
    assert not any(allowed[i] for i in tok.all_special_ids)
    assert not any(allowed[i] for i in range(300) if not tok.decode([i]).strip())  # whitespace-only tokens
    merged = encode_text(tok, "animal")
    spelled = [t for ch in "animal" for t in encode_text(tok, ch)]
    assert round_trips(tok, merged) and spelled != merged and not round_trips(tok, spelled)
    assert not round_trips(tok, encode_text(tok, "animal ")), "trailing whitespace would be lost on export"
    task = animal_task()
    ids = encode_text(tok, task.instruction)
    grad = token_gradients(tiny, ids, rows(task)).grad
    swaps = sample_swaps(tok, ids, grad, positions=range(len(ids)), allowed=allowed, top_k=30, n=40,
                         rng=random.Random(0))  # fmt: skip
    assert swaps and len({tuple(s) for s in swaps}) == len(swaps)
    for swap in swaps:
        changed = [i for i, (a, b) in enumerate(zip(ids, swap, strict=True)) if a != b]
        assert len(changed) == 1 and allowed[swap[changed[0]]]
        assert encode_text(tok, tok.decode(swap)) == swap  # the exported text gives back exactly these tokens


def test_a_soft_prompt_projects_to_its_nearest_tokens(tiny: HFModel) -> None:
    tok, table = tiny.tokenizer, tiny.model.get_input_embeddings().weight
    ids = encode_text(tok, "cat dog")
    noisy = table[torch.tensor(ids)].detach() * 3.0 + 1e-3 * torch.randn(len(ids), table.shape[1])
    projection = project_soft_prompt(tiny, noisy)
    assert projection.ids == ids and projection.text == "cat dog" and projection.round_trips
    assert projection.mean_cosine > 0.99
    seed = animal_task().seed_prompt()
    system = projected_prompt(seed, projection)
    assert system.system.startswith("cat dog\n") and system.instruction == seed.instruction
    assert system.soft_prompt is None and system.parents == (seed.id,)
    instruction = projected_prompt(seed, projection, where="instruction")
    assert instruction.instruction == f"cat dog\n{seed.instruction}" and instruction.system == seed.system
