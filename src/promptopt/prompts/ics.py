"""In-Context Sampling (Yao et al., NAACL Findings 2024, "More Samples or More Prompts?").

Instead of one in-context-learning prompt, query K prompts that differ only in their demos and
aggregate the K answers. A :class:`~promptopt.core.candidate.Prompt` carries the plan as its ``ics`` field
(an :class:`InContextSampling`); the evaluator expands it into K sub-prompts per example, sends them in
one batch through the shared cache and budget (K calls per example), and aggregates:

- ``vote`` — majority of the K answers; ties go to the higher summed label probability in score mode and
  to the earliest sub-prompt in generation mode. Sub-prompts that failed or were unparsable abstain.
- ``confidence`` — sum over sub-prompts of each label's probability (log-probs softmax-normalised over
  the label set per sub-prompt); needs label scoring.

Demo sampling strategies (``shots`` demos per sub-prompt, drawn from a pool, usually the train split):

- ``random`` — K disjoint random subsets while the pool allows (then independent draws).
- ``diverse`` — label-balanced farthest-point sampling in embedding space: each set cycles through the
  labels and takes, within the needed label, the pool item farthest from the set so far; later sets
  prefer items no earlier set used. Covers the space and the labels.
- ``similar`` — per query: the ``K * shots`` nearest pool items (cosine), dealt round-robin so set j
  gets ranks j, j+K, …; within a set the most similar demo comes last (next to the query).

``random`` and ``diverse`` fix the demo sets when the prompt is built (:func:`make_ics_prompt`), so the
prompt exports as K literal demo sets. ``similar`` stores the pool and the embedder and picks per query.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Messages
from promptopt.core.metrics import normalize
from promptopt.core.sampling import Aggregation, InContextSampling, Strategy
from promptopt.prompts.embeddings import Embedder, Vector, dot, get_embedder

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt


def demo_sets_for(ics: InContextSampling, queries: Sequence[Example]) -> list[tuple[tuple[Example, ...], ...]]:
    """The K demo sets each query is asked with."""
    if ics.strategy != "similar":
        return [ics.demo_sets] * len(queries)
    return similar_sets(ics.pool, queries, k=ics.k, shots=ics.shots, embedder=get_embedder(ics.embedder))


def render_all(prompt: Prompt, examples: Sequence[Example]) -> list[tuple[Messages, ...]]:
    """Per example, the messages of every sub-prompt: one for a plain prompt, K for an ICS prompt."""
    if prompt.ics is None:
        return [(prompt.render(ex),) for ex in examples]
    return [
        tuple(replace(prompt, demos=s, ics=None).render(ex) for s in sets)
        for ex, sets in zip(examples, demo_sets_for(prompt.ics, examples), strict=True)
    ]


def example_text(ex: Example) -> str:
    """What is embedded for an example: its input values, in field order."""
    return " ".join(str(v) for v in ex.inputs.values())


# -- strategies ----------------------------------------------------------------------------------------------
def random_sets(pool: Sequence[Example], *, k: int, shots: int, rng: random.Random) -> tuple[tuple[Example, ...], ...]:
    """K random sets of ``shots``; disjoint while the pool has ``k * shots`` items."""
    _check_pool(pool, shots)
    if len(pool) >= k * shots:
        order = rng.sample(list(pool), k * shots)
        return tuple(tuple(order[j * shots : (j + 1) * shots]) for j in range(k))
    return tuple(tuple(rng.sample(list(pool), shots)) for _ in range(k))


def diverse_sets(
    pool: Sequence[Example], *, k: int, shots: int, rng: random.Random, embedder: Embedder
) -> tuple[tuple[Example, ...], ...]:
    """Label-balanced farthest-point sets (see the module docstring)."""
    _check_pool(pool, shots)
    items = list(pool)
    texts = [example_text(e) for e in items]
    vecs = dict(zip((ex.id for ex in items), embedder.fit(texts).embed(texts), strict=True))
    labels = list(dict.fromkeys(ex.answer for ex in items))
    used: set[str] = set()
    sets = []
    for _ in range(k):
        chosen: list[Example] = []
        while len(chosen) < shots:
            counts = Counter(ex.answer for ex in chosen)
            need = min(labels, key=lambda lab: (counts[lab], labels.index(lab)))
            free = [ex for ex in items if ex not in chosen]
            fresh = [ex for ex in free if ex.id not in used] or free
            cands = [ex for ex in fresh if ex.answer == need] or fresh
            if not chosen:
                pick = rng.choice(cands)
            else:
                rng.shuffle(cands)  # random tie-break among equally far items
                pick = max(cands, key=lambda ex: min(1.0 - dot(vecs[ex.id], vecs[c.id]) for c in chosen))
            chosen.append(pick)
        used.update(ex.id for ex in chosen)
        sets.append(tuple(chosen))
    return tuple(sets)


def similar_sets(
    pool: Sequence[Example], queries: Sequence[Example], *, k: int, shots: int, embedder: Embedder
) -> list[tuple[tuple[Example, ...], ...]]:
    """Per query, the ``k * shots`` nearest pool items dealt round-robin into K sets, nearest last."""
    _check_pool(pool, shots)
    items = list(pool)
    texts = [example_text(e) for e in items]
    fitted = embedder.fit(texts)
    pool_vecs = fitted.embed(texts)
    query_vecs = fitted.embed([example_text(q) for q in queries])
    out = []
    for q, qv in zip(queries, query_vecs, strict=True):
        ranked = sorted((i for i, ex in enumerate(items) if ex.id != q.id), key=lambda i: (-dot(qv, pool_vecs[i]), i))
        top = ranked[: k * shots]
        sets = []
        for j in range(k):
            mine = top[j::k] if len(top) >= k * shots else ranked[j : j + shots]
            sets.append(tuple(items[i] for i in reversed(mine[:shots])))
        out.append(tuple(sets))
    return out


def _check_pool(pool: Sequence[Example], shots: int) -> None:
    if len(pool) < shots:
        raise ConfigError(f"the demo pool has {len(pool)} examples, fewer than shots={shots}.", field="shots")


def make_ics_prompt(
    prompt: Prompt,
    pool: Sequence[Example],
    *,
    k: int,
    shots: int,
    strategy: Strategy = "random",
    aggregation: Aggregation = "vote",
    seed: int = 0,
    embedder: str = "auto",
    temperature: float = 0.0,
) -> Prompt:
    """``prompt`` (its instruction, template and system message) as an ICS prompt over ``pool``.

    K = 1 with a fixed strategy (``random``/``diverse``) gives a plain few-shot prompt (``demos`` set, no
    ``ics``): one prompt with one demo set is ordinary in-context learning.

    >>> from promptopt.testing import make_toy_task
    >>> task = make_toy_task()
    >>> p = make_ics_prompt(task.seed_prompt(), task.train, k=3, shots=2)
    >>> p.ics.describe(), len(p.ics.demo_sets)
    ('ICS K=3 × 2 demos, random, vote', 3)
    """
    rng = random.Random(seed)
    sets: tuple[tuple[Example, ...], ...] = ()
    if strategy == "random":
        sets = random_sets(pool, k=k, shots=shots, rng=rng)
    elif strategy == "diverse":
        sets = diverse_sets(pool, k=k, shots=shots, rng=rng, embedder=get_embedder(embedder))
    ics = InContextSampling(
        k=k,
        shots=shots,
        strategy=strategy,
        aggregation=aggregation,
        demo_sets=sets,
        pool=tuple(pool) if strategy == "similar" else (),
        embedder=embedder,
        temperature=temperature,
    )
    meta = {"ics": ics.describe()}
    if k == 1 and strategy != "similar":
        return replace(prompt, demos=sets[0], ics=None, parents=(prompt.id,), origin="ics", meta=meta)
    return replace(prompt, demos=(), ics=ics, parents=(prompt.id,), origin="ics", meta=meta)


# -- aggregation ---------------------------------------------------------------------------------------------
def label_probabilities(logprobs: Sequence[float]) -> list[float]:
    """Softmax over the label set."""
    top = max(logprobs)
    exps = [math.exp(x - top) for x in logprobs]
    total = sum(exps)
    return [e / total for e in exps]


def summed_probabilities(rows: Sequence[Sequence[float]]) -> list[float]:
    """Per label, the sum over sub-prompts of its normalised probability."""
    probs = [label_probabilities(r) for r in rows]
    return [sum(p[i] for p in probs) for i in range(len(probs[0]))]


def majority_vote(predictions: Sequence[str | None], tie_break: Mapping[str, float] | None = None) -> str | None:
    """The most common prediction (``None`` abstains; compared after normalisation). Ties go to the higher
    ``tie_break`` score, then to the earliest prediction."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(predictions):
        if p is not None:
            groups.setdefault(normalize(p), []).append(i)
    if not groups:
        return None
    tb = tie_break or {}
    best = max(groups.values(), key=lambda idx: (len(idx), tb.get(predictions[idx[0]] or "", 0.0), -idx[0]))
    return predictions[best[0]]


def aggregate_vector(rows: Sequence[Vector]) -> Vector:
    """log of the mean label probability over sub-prompts (the ensemble's label distribution)."""
    summed = summed_probabilities(rows)
    return [math.log(s / len(rows)) if s > 0 else float("-inf") for s in summed]
