"""In-Context Sampling: demo sampling strategies, vote/confidence aggregation, export, the ``ics`` optimizer."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import replace

import pytest

import promptopt
from promptopt import Example, Prompt, make_task
from promptopt.core.exceptions import ConfigError
from promptopt.core.sampling import InContextSampling
from promptopt.evaluation.evaluator import Evaluator
from promptopt.models.base import ScoreRequest
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient
from promptopt.models.fake import FakeModel, last_user
from promptopt.prompts.embeddings import TfidfEmbedder, minilm_available
from promptopt.prompts.ics import diverse_sets, majority_vote, make_ics_prompt, random_sets, render_all, similar_sets

TEMPLATE = (
    "{{ instruction }}\n{% for d in demos %}\nText: {{ d.text }}\nLabel: {{ d.answer }}\n{% endfor %}"
    "\nText: {{ text }}\nLabel:"
)

# A pool with three topics (cats, cars, cooking), each with a positive and a negative text.
POOL_TEXTS = [
    ("cat1", "my cat purrs softly on the warm sofa", "positive"),
    ("cat2", "the cat scratched the sofa and hissed at me", "negative"),
    ("cat3", "a playful kitten chases the cat toy", "positive"),
    ("car1", "the new car engine runs smooth on the highway", "positive"),
    ("car2", "the car broke down again on the highway", "negative"),
    ("car3", "an old rusty car engine failed", "negative"),
    ("food1", "the soup recipe tastes delicious with fresh basil", "positive"),
    ("food2", "the burnt soup tastes awful", "negative"),
    ("food3", "a bland recipe with no basil", "negative"),
]
POOL = [Example(id=i, inputs={"text": t}, target=y) for i, t, y in POOL_TEXTS]


def topic(ex: Example) -> str:
    return ex.id.rstrip("0123456789")


def sentiment_task(n: int = 6) -> promptopt.Task:
    exs = [Example(id=f"q{i}", inputs={"text": f"query number {i}"}, target="positive") for i in range(n)]
    return make_task(
        name="ics-toy",
        template=TEMPLATE,
        instruction="Label the text.",
        train=POOL,
        dev=exs,
        test=exs,
        metric="accuracy",
        labels=["positive", "negative"],
    )


# -- sampling strategies -------------------------------------------------------------------------------------
def test_random_sets_are_disjoint_seeded_and_drawn_from_the_pool():
    sets = random_sets(POOL, k=3, shots=3, rng=random.Random(0))
    ids = [ex.id for s in sets for ex in s]
    assert [len(s) for s in sets] == [3, 3, 3]
    assert len(set(ids)) == 9  # disjoint: the pool holds k * shots examples
    assert sets == random_sets(POOL, k=3, shots=3, rng=random.Random(0))
    assert sets != random_sets(POOL, k=3, shots=3, rng=random.Random(1))
    more = random_sets(POOL, k=4, shots=3, rng=random.Random(0))  # pool too small: independent draws
    assert len(more) == 4 and all(len({ex.id for ex in s}) == 3 for s in more)


def test_similar_sets_take_the_nearest_neighbours_dealt_round_robin_nearest_last():
    query = Example(id="q", inputs={"text": "the cat sleeps on the sofa"}, target="positive")
    (sets,) = similar_sets(POOL, [query], k=2, shots=1, embedder=TfidfEmbedder())
    assert {topic(ex) for s in sets for ex in s} == {"cat"}
    assert sets[0][0].id in {"cat1", "cat2"}  # rank 0 goes to set 0
    (sets3,) = similar_sets(POOL, [query], k=1, shots=3, embedder=TfidfEmbedder())
    assert [topic(ex) for ex in sets3[0]][-2:] == ["cat", "cat"]
    assert sets3[0][-1].id in {"cat1", "cat2"}  # the most similar demo sits next to the query
    (car,) = similar_sets(POOL, [Example(id="x", inputs={"text": "car engine"}, target="negative")], k=3, shots=1,
                          embedder=TfidfEmbedder())  # fmt: skip
    assert {topic(ex) for s in car for ex in s} == {"car"}


def test_similar_sets_never_use_the_query_itself():
    (sets,) = similar_sets(POOL, [POOL[0]], k=2, shots=2, embedder=TfidfEmbedder())
    assert "cat1" not in {ex.id for s in sets for ex in s}


def test_diverse_sets_balance_labels_and_cover_topics():
    sets = diverse_sets(POOL, k=2, shots=4, rng=random.Random(0), embedder=TfidfEmbedder())
    for s in sets:
        assert Counter(ex.answer for ex in s) == {"positive": 2, "negative": 2}
        assert len({topic(ex) for ex in s}) == 3  # farthest-point picks spread over the three topics
    assert not {ex.id for ex in sets[0]} & {ex.id for ex in sets[1]}  # later sets prefer unused items


def test_pool_smaller_than_shots_is_a_config_error():
    with pytest.raises(ConfigError, match="shots"):
        random_sets(POOL[:2], k=1, shots=3, rng=random.Random(0))


# -- aggregation ---------------------------------------------------------------------------------------------
# Known per-demo-set outputs: the fake model's label log-probs depend on which demo set the prompt holds.
# Set A (cat1, car1) is confident 'positive'; sets B and C lean 'negative'. Vote: negative (2 of 3);
# summed probability: positive (0.9 + 0.4 + 0.4 = 1.7 > 1.3).
PER_SET = {"cat1": (0.9, 0.1), "cat2": (0.4, 0.6), "cat3": (0.4, 0.6)}


def per_set_scores(request: ScoreRequest) -> list[float]:
    user = last_user(request.messages)
    key = next(k for k in PER_SET if dict(POOL_TEXTS_BY_ID)[k] in user)
    return [float(__import__("math").log(p)) for p in PER_SET[key]]


POOL_TEXTS_BY_ID = [(i, t) for i, t, _ in POOL_TEXTS]
SETS = ((POOL[0], POOL[3]), (POOL[1], POOL[4]), (POOL[2], POOL[5]))


def ics_prompt(aggregation: str) -> Prompt:
    ics = InContextSampling(k=3, shots=2, demo_sets=SETS, aggregation=aggregation)  # type: ignore[arg-type]
    return Prompt(instruction="Label the text.", template=TEMPLATE, ics=ics)


def evaluator(model: FakeModel, cache: ResponseCache | None = None, mode: str = "auto") -> Evaluator:
    client = ModelClient(model, cache=cache, budget=BudgetTracker())
    return Evaluator(sentiment_task(), client, mode=mode)  # type: ignore[arg-type]


def test_vote_and_confidence_aggregate_known_per_set_outputs():
    model = FakeModel(score_fn=per_set_scores)
    ev = evaluator(model, ResponseCache(":memory:"))
    vote = ev.evaluate(ics_prompt("vote"), split="test")
    assert {r.prediction for r in vote.records} == {"negative"}
    assert vote.mean == 0.0
    assert vote.calls == 3 * 6  # K calls per example
    conf = ev.evaluate(ics_prompt("confidence"), split="test")
    assert {r.prediction for r in conf.records} == {"positive"}
    assert conf.mean == 1.0
    assert conf.calls == 0  # same sub-prompts: every call comes from the cache
    rec = conf.records[0]
    assert rec.label_logprobs == pytest.approx([__import__("math").log(1.7 / 3), __import__("math").log(1.3 / 3)])
    assert rec.raw == "negative | negative | negative" or rec.raw.count("|") == 2


def test_generation_vote_skips_unparsable_answers_and_breaks_ties_by_order():
    answers = {"cat1": "positive", "cat2": "I do not know", "cat3": "negative"}

    def fn(request):
        user = last_user(request.messages)
        return next(a for k, a in answers.items() if dict(POOL_TEXTS_BY_ID)[k] in user)

    ev = evaluator(FakeModel(fn=fn), mode="generate")
    res = ev.evaluate(ics_prompt("vote"), split="test")
    assert {r.prediction for r in res.records} == {"positive"}  # 1–1 after an abstention: earliest wins
    assert res.n_parse_errors == 0
    answers.update(cat1="??", cat3="!!")
    res = evaluator(FakeModel(fn=fn), mode="generate").evaluate(ics_prompt("vote"), split="test")
    assert res.n_parse_errors == 6  # nobody answered: a parse error, not a wrong answer


def test_confidence_needs_label_scoring():
    with pytest.raises(ConfigError, match="confidence"):
        evaluator(FakeModel(default="positive"), mode="generate").evaluate(ics_prompt("confidence"), split="test")


def test_majority_vote_ties_use_the_tie_break_scores():
    assert majority_vote(["a", "b", "b"]) == "b"
    assert majority_vote(["a", "b"]) == "a"
    assert majority_vote(["a", "b"], {"a": 0.2, "b": 0.9}) == "b"
    assert majority_vote([None, None]) is None


def test_sampled_sub_prompts_use_distinct_sample_indices():
    model = FakeModel(default="positive")
    ics = InContextSampling(k=3, shots=2, demo_sets=(SETS[0],) * 3, temperature=0.7)
    prompt = Prompt(instruction="Label the text.", template=TEMPLATE, ics=ics)
    evaluator(model, mode="generate").evaluate(prompt, split="test")
    assert sorted({(r.temperature, r.sample) for r in model.requests}) == [(0.7, 1), (0.7, 2), (0.7, 3)]


# -- the prompt ----------------------------------------------------------------------------------------------
def test_plain_prompt_ids_do_not_change():
    p = Prompt(instruction="Label the text.", template=TEMPLATE)
    payload = {"instruction": p.instruction, "template": TEMPLATE, "demos": [], "system": p.system, "soft_prompt": None}
    assert p.id == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    assert ics_prompt("vote").id != ics_prompt("confidence").id != p.id


def test_ics_prompt_round_trips_and_exports_its_demo_sets(tmp_path):
    task = sentiment_task()
    for strategy in ("random", "similar", "diverse"):
        p = make_ics_prompt(task.seed_prompt(), task.train, k=3, shots=2, strategy=strategy, embedder="tfidf")
        assert Prompt.from_dict(json.loads(json.dumps(p.to_dict()))).id == p.id
        out = p.export(tmp_path / strategy)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["ics"]["k"] == 3 and manifest["ics"]["strategy"] == strategy
        assert Prompt.load(out).id == p.id
        assert "In-Context Sampling" in (out / "README.md").read_text()
        assert not (out / "messages.json").exists() and manifest["messages"] is None  # K chats, not one
        if strategy == "similar":
            assert len(json.loads((out / "demo_pool.json").read_text())) == len(POOL)
        else:
            sets = json.loads((out / "demo_sets.json").read_text())
            assert [len(s) for s in sets] == [2, 2, 2] and {"text", "answer"} <= set(sets[0][0])
    assert len(render_all(p, task.test[:2])) == 2 and len(render_all(p, task.test[:1])[0]) == 3


def test_k1_with_fixed_sets_is_a_plain_few_shot_prompt():
    task = sentiment_task()
    p = make_ics_prompt(task.seed_prompt(), task.train, k=1, shots=2)
    assert p.ics is None and len(p.demos) == 2


def test_ics_prompt_rejects_plain_demos_too():
    with pytest.raises(ConfigError, match="demos"):
        Prompt(
            instruction="x",
            template=TEMPLATE,
            demos=(POOL[0],),
            ics=InContextSampling(k=1, shots=1, demo_sets=((POOL[1],),)),
        )


@pytest.mark.integration  # loads a 22M-parameter model (a few seconds)
@pytest.mark.skipif(not minilm_available(), reason="all-MiniLM-L6-v2 (the embed extra) is not installed")
def test_minilm_puts_paraphrases_closer_than_unrelated_text():
    from promptopt.prompts.embeddings import dot, get_embedder

    a, b, c = get_embedder("minilm").embed(["The film was wonderful.", "A great movie!", "The car needs new tyres."])
    assert dot(a, b) > dot(a, c) + 0.2
    assert dot(a, a) == pytest.approx(1.0, abs=1e-5)


# -- the optimizer -------------------------------------------------------------------------------------------
def test_ics_optimizer_screens_combinations_and_promotes_the_best():
    task = sentiment_task()

    # the model is right only when a prompt holds a 'positive' demo: zero-shot scores 0, label-balanced sets 1
    def fn(request):
        return "positive" if "Label: positive" in last_user(request.messages) else "negative"

    opt = promptopt.load_optimizer("ics", ks=[1, 3], shots=[1, 2], strategies=["random", "diverse"], embedder="tfidf")
    result = promptopt.optimize(task, opt, FakeModel(fn=fn), cache=False)
    assert result.baseline_dev["mean"] == 0.0
    assert result.best_dev["mean"] == 1.0
    assert result.best_prompt.origin == "ics"


def test_ics_sub_prompts_render_their_demos_as_chat_turns():
    p = replace(ics_prompt("vote"), demo_format="turns")
    ex = Example(id="q", inputs={"text": "a query"}, target="positive")
    subs = render_all(p, [ex])[0]
    assert len(subs) == 3
    for messages, demo_set in zip(subs, SETS, strict=True):
        assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert [m.content for m in messages if m.role == "assistant"] == [d.answer for d in demo_set]


def test_ics_optimizer_plans_its_budget_so_the_screened_best_are_confirmed():
    task = sentiment_task()

    def fn(request):
        return "positive" if "positive" in " ".join(m.content for m in request.messages[1:]) else "negative"

    opt = promptopt.load_optimizer("ics", ks=[1, 3], shots=[1, 2], strategies=["random"], top_k=2)
    n_dev = len(task.dev)
    cache = promptopt.ResponseCache(":memory:")
    tight = promptopt.optimize(task, opt, FakeModel(fn=fn), cache=cache, budget=promptopt.Budget(max_calls=3 * n_dev))
    assert 0 < tight.search["screened"] < 8 and tight.search["confirmed"] == 2
    model = FakeModel(fn=fn)
    with pytest.raises(promptopt.ConfigError, match="--budget-calls"):
        promptopt.optimize(task, opt, model, cache=False, budget=promptopt.Budget(max_calls=n_dev + 1))
    assert model.requests == []


def test_ics_export_has_each_sub_prompts_chat_as_plain_data(tmp_path):
    import jinja2

    p = replace(ics_prompt("vote"), demo_format="turns")
    out = p.export(tmp_path / "e")
    specs = json.loads((out / "messages_sets.json").read_text())
    ex = Example(id="q", inputs={"text": "a query"}, target="positive")
    template = jinja2.Template((out / "template.jinja").read_text())
    for spec, sub in zip(specs, render_all(p, [ex])[0], strict=True):
        *literal, query = spec
        assert literal == [m.to_dict() for m in sub[:-1]] and query["demos"] is None
        assert template.render(instruction=query["instruction"], demos=[], **ex.inputs).strip() == sub[-1].content
