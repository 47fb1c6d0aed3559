"""Soft prompts on a tiny random Llama built in the test (no downloads): training, evaluation, PEFT
round trip, export, budget accounting and resume."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import peft
import torch
import transformers
from typer.testing import CliRunner

import promptopt
from promptopt import Budget, ConfigError, Example, FakeModel, Prompt, make_task
from promptopt.cli.app import app
from promptopt.core.messages import Message
from promptopt.core.task import GenerationConfig
from promptopt.models.base import ScoreRequest
from promptopt.models.budget import BudgetTracker
from promptopt.models.client import ModelClient
from promptopt.models.hf import HFModel
from promptopt.models.soft import (
    SoftPromptModel,
    base_model_id,
    init_embeddings,
    load_soft_prompt,
    save_soft_prompt,
    soft_prompted,
)
from promptopt.models.vectors import TaskPromptVector, VectorStore
from promptopt.optimizers.soft_prompt import SoftPromptOptimizer
from promptopt.testing.tiny import build_tiny_llama

TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "mouse", "cow", "sheep"]
COLOURS = ["red", "blue", "green", "black", "white", "pink", "gray", "brown"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [" ".join([*ANIMALS, *COLOURS, "yes", "no", "is it an animal? word:"])] * 20
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-llama"),
        corpus,
        chat_template=TEMPLATE,
        vocab_size=300,
        initializer_range=0.3,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="module")
def base(model_dir: Path) -> HFModel:
    return HFModel(str(model_dir), device="cpu", batch_size=5)


def examples(prefix: str, target: str | None = None) -> list[Example]:
    pairs = [(w, "yes") for w in ANIMALS] + [(w, "no") for w in COLOURS]
    random.Random(prefix).shuffle(pairs)
    return [Example(id=f"{prefix}{i}", inputs={"word": w}, target=target or y) for i, (w, y) in enumerate(pairs)]


def make(target: str | None = None, *, labels: bool = True) -> promptopt.Task:
    """Is the word an animal (labels yes/no), or with ``target`` the same answer for every word."""
    return make_task(
        name="animal" if target is None else f"say-{target.replace(' ', '-')}",
        template="{{ instruction }}\nWord: {{ word }}",
        instruction="Is it an animal?",
        train=examples("tr", target),
        dev=examples("dv", target),
        test=examples("te", target),
        metric="accuracy" if labels else "exact_match",
        labels=["yes", "no"] if labels else None,
        parser=None if labels else "first_line",
        generation=GenerationConfig(max_tokens=1),  # the tiny model cannot learn to end its turn
    )


def soft(**overrides: object) -> SoftPromptOptimizer:
    settings = {"init": "vocab", "lr": 0.1, "batch_size": 8, "max_steps": 6, "eval_every": 3, "patience": 0}
    return SoftPromptOptimizer(**{**settings, **overrides})


def test_gradients_reach_only_the_virtual_tokens(base: HFModel) -> None:
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    base.model.requires_grad_(False)
    param = torch.nn.Parameter(init_embeddings(base, 4, "random", seed=1))
    loss, tokens = SoftPromptModel(base, param).nll([((Message("user", "cat"),), "yes")])
    loss.backward()
    assert param.grad is not None and param.grad.abs().sum() > 0 and tokens > 4
    assert all(p.grad is None for p in base.model.parameters())

    result = promptopt.optimize(make(), soft(), base, cache=False)
    assert result.usage["by_role"]["train"]["calls"] == 6 * 8
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit


def test_tiny_model_learns_a_generation_task(base: HFModel) -> None:
    """A fixed answer the random model never produces: target-sequence loss, greedy decoding."""
    result = promptopt.optimize(make("cow", labels=False), soft(max_steps=20, eval_every=10), base, cache=False)
    assert result.baseline_dev["mean"] == 0.0
    assert result.best_dev["mean"] == 1.0 and result.best_test["mean"] == 1.0
    assert result.best_prompt.soft_prompt is not None and result.best_prompt.origin == "soft_prompt"


def unpopular_label(base: HFModel) -> str:
    """The label the untrained model prefers on fewer dev examples."""
    seed = make().seed_prompt()
    scores = base.score([ScoreRequest(messages=seed.render(ex), continuations=("yes", "no")) for ex in make().dev])
    return "yes" if sum(s.logprobs[0] > s.logprobs[1] for s in scores) < len(scores) / 2 else "no"


def test_tiny_model_learns_to_steer_label_scores(base: HFModel) -> None:
    """Label scoring: every answer is the label the untrained model prefers less often."""
    result = promptopt.optimize(make(unpopular_label(base)), soft(max_steps=20, eval_every=5), base, cache=False)
    assert result.baseline_dev["mean"] <= 0.5
    assert result.best_dev["mean"] == 1.0


def naive_logprob(peft_model: object, ids: list[int], continuation: list[int], n: int) -> float:
    logits = peft_model(input_ids=torch.tensor([ids + continuation])).logits[0, n:].log_softmax(-1)
    return sum(float(logits[len(ids) - 1 + i, t]) for i, t in enumerate(continuation))


def test_save_then_load_in_peft_gives_identical_logits(base: HFModel, model_dir: Path, tmp_path: Path) -> None:
    values = init_embeddings(base, 5, "random", seed=3)
    path = save_soft_prompt(tmp_path / "adapter", values, base=base, task="animal")
    loaded = load_soft_prompt(path)
    assert torch.equal(loaded.embeddings, values) and loaded.base_model == base_model_id(base)
    reference = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model_dir), path)
    ours = SoftPromptModel(base, loaded.embeddings)
    messages = [(Message("system", "s"), Message("user", f"Is it an animal?\nWord: {w}")) for w in ANIMALS[:4]]
    with torch.no_grad():
        for m in messages:
            ids = base.encode(m)
            theirs = reference(input_ids=torch.tensor([ids])).logits[0, 5:]
            mine = base.model(inputs_embeds=ours.embed(torch.tensor([ours.encode(m)]))).logits[0, 5:]
            assert torch.equal(theirs, mine)
        scores = ours.score([ScoreRequest(messages=m, continuations=("yes", "no", "cow dog")) for m in messages])
        for m, s in zip(messages, scores, strict=True):
            ids = base.encode(m)
            expected = [
                naive_logprob(reference, ids, base.tokenizer(c)["input_ids"], 5) for c in ("yes", "no", "cow dog")
            ]
            assert s.logprobs == pytest.approx(expected, abs=1e-5)
    plain = base.score([ScoreRequest(messages=messages[0], continuations=("yes",))])[0].logprobs
    assert plain != scores[0].logprobs[:1]  # the virtual tokens change what the model sees


def test_soft_prompts_never_share_cached_prefixes(base: HFModel, tmp_path: Path) -> None:
    requests = [ScoreRequest(messages=(Message("user", f"Word: {w}"),), continuations=("yes", "no")) for w in ANIMALS]
    a, b = (SoftPromptModel(base, init_embeddings(base, 4, "random", seed=s)) for s in (1, 2))
    first_a, first_b = a.score(requests), b.score(requests)
    assert first_a != first_b
    assert a.score(requests) == first_a and SoftPromptModel(base, b.embeddings).score(requests) == first_b


def test_export_and_reload_a_soft_prompted_result(base: HFModel, model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = promptopt.optimize(make("cow", labels=False), soft(max_steps=20, eval_every=10), base, run_dir=run)
    best = result.best_prompt
    assert best.soft_prompt and Path(best.soft_prompt).parent == run / "soft_prompt"
    export = run / "best_prompt"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["soft_prompt"] == "soft_prompt"
    peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model_dir), export / "soft_prompt")
    loaded = Prompt.load(run)
    assert loaded.soft_prompt == str(export / "soft_prompt") and loaded.id == best.id
    again = promptopt.evaluate(make("cow", labels=False), base, loaded, split="dev", cache=False)
    assert again.mean == result.best_dev["mean"]


def test_soft_prompt_needs_its_own_base_model(base: HFModel, tmp_path: Path) -> None:
    path = save_soft_prompt(tmp_path / "a", init_embeddings(base, 3, "random"), base=base)
    meta = json.loads((path / "promptopt.json").read_text())
    (path / "promptopt.json").write_text(json.dumps({**meta, "base_model": "hf:other"}))
    client = ModelClient(base, cache=None, budget=BudgetTracker())
    with pytest.raises(ConfigError, match="trained on 'hf:other'"):
        soft_prompted(client, path)
    with pytest.raises(ConfigError, match="not one"):
        soft_prompted(ModelClient(FakeModel.from_spec("echo"), cache=None, budget=BudgetTracker()), path)


def test_untrainable_models_fail_fast() -> None:
    fake = FakeModel.from_spec("echo")
    with pytest.raises(ConfigError, match="cannot be trained"):
        promptopt.optimize(make(), "soft-prompt", fake, cache=False)
    with pytest.raises(ConfigError, match="init"):
        SoftPromptOptimizer(init="zeros")
    with pytest.raises(ConfigError, match="seeded init"):
        SoftPromptOptimizer(init="text", save_vector=True)
    with pytest.raises(ConfigError, match="tpv"):
        SoftPromptOptimizer(init="random", tpv=3)


def test_budget_counts_training_examples_and_resume_continues(base: HFModel, tmp_path: Path) -> None:
    task = make()
    opt = soft(batch_size=4, eval_every=2, max_steps=6)
    full = promptopt.optimize(task, opt, base, cache=tmp_path / "a.sqlite", run_dir=tmp_path / "full")
    n = len(task.dev)
    assert full.usage["by_role"]["train"]["calls"] == 6 * 4
    assert full.usage["by_role"]["task"]["calls"] == n * 4  # the seed and 3 checkpoints on dev

    run = tmp_path / "cut"
    cut = promptopt.optimize(
        task, opt, base, cache=tmp_path / "b.sqlite", run_dir=run, budget=Budget(max_calls=2 * n + 8)
    )
    assert cut.usage["by_role"]["train"]["calls"] == 8 and "call budget" in cut.stop_reason
    resumed = promptopt.optimize(
        task, opt, base, cache=tmp_path / "b.sqlite", run_dir=run, budget=Budget(max_calls=4 * n + 24), resume=True
    )
    assert resumed.usage["by_role"]["train"]["calls"] == 24  # steps 1-2 were not trained (nor paid) twice
    history = [json.loads(line)["prompt"]["id"] for line in (run / "history.jsonl").read_text().splitlines()]
    expected = [
        json.loads(line)["prompt"]["id"] for line in (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    ]
    assert history == expected  # the same checkpoints, bit for bit
    assert resumed.best_prompt.id == full.best_prompt.id


def write_task_dir(root: Path) -> Path:
    root.mkdir()
    (root / "template.jinja").write_text("{{ instruction }}\nWord: {{ word }}")
    rows = [{"word": ex.inputs["word"], "label": ex.target} for ex in examples("x")]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    (root / "task.yaml").write_text(
        "name: animal\ninstruction: Is it an animal?\ntemplate: template.jinja\n"
        "data: {file: data.jsonl, splits: {train: 16, dev: 16, test: 16}}\n"
        'inputs: {word: word}\ntarget: label\nlabels: ["yes", "no"]\nmetric: accuracy\nparser: label_set\n'
    )
    return root


def test_cli_optimize_and_resume(model_dir: Path, tmp_path: Path) -> None:
    task = write_task_dir(tmp_path / "animal")
    common = ["--model", f"hf:{model_dir}", "--cache", str(tmp_path / "c.sqlite"), "--quiet", "--json"]
    settings = ["--set", "max_steps=4", "--set", "eval_every=2", "--set", "batch_size=4", "--set", "init=vocab"]
    runner = CliRunner()
    first = runner.invoke(
        app,
        [
            "optimize",
            "--task",
            str(task),
            "--optimizer",
            "soft-prompt",
            "--budget-calls",
            "40",
            "--runs-dir",
            str(tmp_path / "runs"),
            *settings,
            *common,
        ],
    )
    assert first.exit_code == 0, first.stderr
    before = json.loads(first.stdout)["usage"]["by_role"]
    assert before["train"]["calls"] == 8
    (run,) = (tmp_path / "runs").iterdir()
    again = runner.invoke(app, ["optimize", "--resume", str(run), "--budget-calls", "80", *common])
    assert again.exit_code == 0, again.stderr
    usage = json.loads(again.stdout)["usage"]["by_role"]
    assert usage["train"]["calls"] == 16  # 2 steps before the cut, 2 after
    assert usage["task"]["calls"] == before["task"]["calls"] * 3 // 2  # seed and step 2 on dev, then step 4


# -- task prompt vectors ---------------------------------------------------------------------------------
def first_checkpoint(run: Path) -> torch.Tensor:
    return load_soft_prompt(min((run / "soft_prompt").glob("step-*"))).embeddings


def test_tuned_vector_is_stored_and_initialises_a_new_task(base: HFModel, tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "vectors")
    source_task = make(unpopular_label(base))
    source = promptopt.optimize(source_task, soft(init="random", save_vector=True, tpv_store=str(store.root)), base)
    assert source.best_prompt.soft_prompt is not None
    tuned = load_soft_prompt(source.best_prompt.soft_prompt).embeddings
    init = init_embeddings(base, 16, "random", seed=0)
    stored = store.get(source_task.name, base_model=base_model_id(base))
    torch.testing.assert_close(stored.values, tuned - init)  # the best checkpoint minus its init

    run = tmp_path / "target"
    tpv = soft(init="random", tpv={source_task.name: 2.0}, tpv_store=str(store.root), max_steps=1, lr=0.0)
    promptopt.optimize(make(), tpv, base, run_dir=run)
    torch.testing.assert_close(first_checkpoint(run), init + 2.0 * stored.values)


def test_tpv_all_combines_every_other_stored_task(base: HFModel, tmp_path: Path) -> None:
    store = VectorStore(tmp_path)
    for i, task in enumerate(["one", "two", "say-no"]):
        store.put(TaskPromptVector(torch.full((16, 32), i + 1.0), base_model_id(base), "random", 0, {task: 1.0}))
    run = tmp_path / "run"
    promptopt.optimize(
        make("no"), soft(init="random", tpv="all", tpv_store=str(tmp_path), max_steps=1, lr=0.0), base, run_dir=run
    )
    expected = init_embeddings(base, 16, "random", seed=0) + 3.0  # one + two: the task's own vector is left out
    torch.testing.assert_close(first_checkpoint(run), expected)


def test_tpv_from_another_base_model_is_refused(base: HFModel, tmp_path: Path) -> None:
    VectorStore(tmp_path).put(TaskPromptVector(torch.zeros(16, 32), "smollm2", "random", 0, {"animal": 1.0}))
    with pytest.raises(ConfigError, match="stored for 'smollm2'"):
        promptopt.optimize(make("no"), soft(init="random", tpv={"animal": 1.0}, tpv_store=str(tmp_path)), base)


def test_auto_reserves_the_soft_prompt_share_before_the_demonstrations(base: HFModel) -> None:
    from promptopt.optimizers.auto import AutoOptimizer

    task = make()
    n = len(task.dev)
    result = promptopt.optimize(task, AutoOptimizer(), base, budget=Budget(max_calls=400), cache=False)
    notes = "\n".join(result.notes)
    left = 400 - n
    reserved = max(2 * (8 * 8 + n), int(left * 0.75))  # the preset: 2 checkpoints of 8 steps x 8 examples + dev
    assert f"demonstrations: fewshot with up to {left - reserved} of {left} calls left" in notes
    assert "soft prompt: soft_prompt with up to" in notes
    assert "soft prompt trained under the" in notes  # which prompt it trained under, and why
    assert "instruction search" not in notes  # in process, the soft prompt takes the instruction search's place
    assert result.usage["by_role"]["train"]["calls"] >= 2 * 8 * 8  # its two checkpoints were trained
    roles = result.usage["by_role"]
    assert roles["task"]["calls"] + roles["train"]["calls"] <= 400  # the test evaluation ("report") aside


def test_a_soft_prompt_under_demos_does_not_train_on_the_demos_themselves() -> None:
    from promptopt.optimizers.soft_prompt import training_examples

    task = make()
    train = list(task.train)
    shown = dataclasses.replace(task.seed_prompt(), demos=tuple(train[:3]))
    assert training_examples(shown, train) == train[3:]
    assert training_examples(dataclasses.replace(shown, demos=tuple(train)), train) == train  # nothing else left


def test_a_soft_prompt_trains_under_a_prompt_that_picks_its_demos_per_query(base: HFModel) -> None:
    from promptopt.prompts.ics import make_ics_prompt

    task = make("no")
    similar = make_ics_prompt(task.seed_prompt(), task.train, k=1, shots=2, strategy="similar", embedder="tfidf")

    class UnderSimilarDemos(SoftPromptOptimizer):
        def _start_prompt(self, state: object) -> Prompt:
            return similar

    result = promptopt.optimize(task, UnderSimilarDemos(**{**soft().to_config(), "max_steps": 3}), base, cache=False)
    assert result.usage["by_role"]["train"]["calls"] == 3 * 8  # it trained (rendering each example under `similar`)
    assert result.n_trials == 2  # the seed, then the checkpoint: the start prompt's per-query demos plus soft tokens
