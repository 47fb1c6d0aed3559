"""Pseudo-labels for the label-free ``unsupervised`` optimizer: label distributions from one evaluation of
unlabeled examples, calibrated pseudo-labels and a class-balanced selection of the confident ones.

A label distribution comes from label scoring where the backend can (the softmax of the label log-likelihoods),
else from self-consistency: the share of sampled answers (an In-Context Sampling prompt with K identical demo
sets and a temperature, :class:`~promptopt.core.sampling.InContextSampling`) that parse to each label. A single
greedy answer is a one-hot distribution; an unparsable one is uniform.

Small models are biased towards one label, so a raw argmax can give every example the same pseudo-label. The
pseudo-label is therefore the argmax of the *calibrated* distribution — each label's probability minus its mean
over the pool (the pool's own prior, as contextual calibration does without a content-free input) — and the
confident set takes the same number of examples for every label, most confident first, so one label cannot
swallow the pool.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptopt.core.data import Example
from promptopt.core.parsers import Parser
from promptopt.evaluation.evaluator import EvalResult, ExampleRecord

Distribution = tuple[float, ...]


def distribution(record: ExampleRecord, labels: Sequence[str], parser: Parser) -> Distribution:
    """One example's label distribution (see the module docstring)."""
    n = len(labels)
    if record.label_logprobs is not None and len(record.label_logprobs) == n:
        top = max(record.label_logprobs)
        weights = [math.exp(x - top) for x in record.label_logprobs]
        total = sum(weights)
        return tuple(w / total for w in weights)
    pieces = record.raw.split(" | ") if record.raw else []
    answers = [parser(p) for p in pieces] if len(pieces) > 1 else [record.prediction]
    votes = [sum(a == label for a in answers) for label in labels]
    if not sum(votes):
        return tuple(1.0 / n for _ in labels)
    return tuple(v / sum(votes) for v in votes)


@dataclass(frozen=True)
class PseudoLabels:
    """Calibrated pseudo-labels of a pool, and its class-balanced confident subset."""

    labels: dict[str, str]
    """Example id → pseudo-label, for every example of the pool."""
    confidence: dict[str, float]
    """Example id → calibrated margin of its pseudo-label (higher: more confident)."""
    selected: tuple[Example, ...]
    """The confident set: the same number per label, most confident first, as labeled examples."""


def pseudo_label(
    pool: Sequence[Example],
    result: EvalResult,
    labels: Sequence[str],
    parser: Parser,
    *,
    per_label: int,
    fixed: Mapping[str, str] | None = None,
) -> PseudoLabels:
    """Pseudo-labels of ``pool`` from ``result`` (its evaluation); ``fixed`` (id → label: the labeler's own demos,
    which it sees answered) overrides the prediction. The confident set has ``min(per_label, fewest pseudo-labels
    of any label that has one)`` examples per label, round-robin over the labels, most confident first."""
    fixed = fixed or {}
    records = {r.example_id: r for r in result.records}
    dists = {ex.id: distribution(records[ex.id], labels, parser) for ex in pool}
    prior = [sum(d[j] for d in dists.values()) / len(dists) for j in range(len(labels))]
    out: dict[str, str] = {}
    margin: dict[str, float] = {}
    for ex in pool:
        calibrated = [p - q for p, q in zip(dists[ex.id], prior, strict=True)]
        j = max(range(len(labels)), key=lambda i: calibrated[i])
        out[ex.id] = fixed.get(ex.id, labels[j])
        margin[ex.id] = math.inf if ex.id in fixed else calibrated[j]
    by_label: dict[str, list[Example]] = {label: [] for label in labels}
    for ex in sorted(pool, key=lambda e: -margin[e.id]):
        by_label[out[ex.id]].append(ex)
    present = [exs for exs in by_label.values() if exs]
    m = min([per_label, *(len(exs) for exs in present)])
    selected = [
        Example(id=ex.id, inputs=ex.inputs, target=out[ex.id], meta=ex.meta)
        for rank in range(m)
        for exs in present
        for ex in (exs[rank],)
    ]
    return PseudoLabels(labels=out, confidence=margin, selected=tuple(selected))


def balanced_demos(selected: Sequence[Example], k: int, draw: int, seed: str) -> tuple[Example, ...]:
    """``k`` demos from the confident set, balanced over labels: draw 0 takes the most confident (the set's
    round-robin order), a later draw a seeded shuffle within each label, interleaved the same way."""
    if draw == 0:
        return tuple(selected[:k])
    rng = random.Random(f"{seed}:{k}:{draw}")
    groups: dict[str, list[Example]] = {}
    for ex in selected:
        groups.setdefault(ex.answer, []).append(ex)
    for exs in groups.values():
        rng.shuffle(exs)
    order = list(groups.values())
    rng.shuffle(order)
    mixed = [exs[i] for i in range(max(map(len, order), default=0)) for exs in order if i < len(exs)]
    return tuple(mixed[:k])
