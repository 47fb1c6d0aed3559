"""The evaluator: the one code path that turns (prompt, examples, model) into scores.

render → batch → model (label scoring or generation) → parse → metric, with one record per example.
A model/API failure, an unparsable output or a metric that raised (or returned a non-number) is recorded as
an error (score 0; ``error_kind`` api, parse or metric) and counted apart from wrong answers. Classification
tasks are scored by label log-likelihood when the model can (one pass per example), because small models' free
text is often unparsable even when they 'know' the label.

An In-Context Sampling prompt (``Prompt.ics``) is K sub-prompts per example: all K go out in the same
batched call (K model calls per example, each cached and budgeted like any other) and their records are
aggregated into one per example (:mod:`promptopt.prompts.ics`: majority vote, or summed label probability).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.metrics import score_prediction
from promptopt.core.sampling import Aggregation
from promptopt.core.stats import PairedComparison, interval_method, mean, mean_ci, paired_comparison
from promptopt.core.task import Task
from promptopt.evaluation.expansion import expand
from promptopt.models.base import GenerationRequest, ScoreRequest
from promptopt.models.client import ModelClient
from promptopt.prompts.ics import aggregate_vector, majority_vote, summed_probabilities

Mode = Literal["auto", "score", "generate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExampleRecord:
    example_id: str
    prediction: str | None
    score: float
    raw: str = ""
    error: str | None = None
    error_kind: Literal["api", "parse", "metric"] | None = None
    label_logprobs: tuple[float, ...] | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.label_logprobs is not None:
            d["label_logprobs"] = list(self.label_logprobs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExampleRecord:
        lp = d.get("label_logprobs")
        return cls(**{**d, "label_logprobs": tuple(lp) if lp is not None else None})


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """Scores of one prompt on a list of examples."""

    prompt_id: str
    split: str
    mode: str
    records: tuple[ExampleRecord, ...]
    metric: str = "score"
    calls: int = 0
    """Model calls this evaluation made (cache hits excluded)."""

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.records]

    @cached_property
    def by_example(self) -> dict[str, float]:
        """Score per example id."""
        return {r.example_id: r.score for r in self.records}

    @property
    def mean(self) -> float:
        return mean(self.scores)

    @cached_property
    def ci(self) -> tuple[float, float]:
        """95% CI of the mean: Wilson for 0/1 scores, else the bootstrap (:func:`~promptopt.core.stats.mean_ci`)."""
        return mean_ci(self.scores)

    @property
    def n_api_errors(self) -> int:
        return sum(r.error_kind == "api" for r in self.records)

    @property
    def n_parse_errors(self) -> int:
        return sum(r.error_kind == "parse" for r in self.records)

    @property
    def n_metric_errors(self) -> int:
        """Examples the metric could not score (it raised or returned a non-number)."""
        return sum(r.error_kind == "metric" for r in self.records)

    def failures(self) -> list[ExampleRecord]:
        """Examples answered wrongly (including parse errors; API errors are not the prompt's fault)."""
        return [r for r in self.records if r.score < 1.0 and r.error_kind != "api"]

    def summary(self) -> dict[str, Any]:
        lo, hi = self.ci
        return {
            "split": self.split,
            "n": self.n,
            "mean": self.mean,
            "ci_low": lo,
            "ci_high": hi,
            "ci_method": interval_method(self.scores),
            "api_errors": self.n_api_errors,
            "parse_errors": self.n_parse_errors,
            "metric_errors": self.n_metric_errors,
            "calls": self.calls,
            "mode": self.mode,
            "metric": self.metric,
        }

    def format(self) -> str:
        lo, hi = self.ci
        errs = f", {self.n_api_errors} API errors" if self.n_api_errors else ""
        errs += f", {self.n_parse_errors} unparsable" if self.n_parse_errors else ""
        errs += f", {self.n_metric_errors} metric errors" if self.n_metric_errors else ""
        return f"{self.mean:.3f} [95% CI {lo:.3f}–{hi:.3f}] on {self.split} (n={self.n}{errs})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "split": self.split,
            "mode": self.mode,
            "metric": self.metric,
            "calls": self.calls,
            "records": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalResult:
        return cls(
            prompt_id=d["prompt_id"],
            split=d["split"],
            mode=d["mode"],
            metric=d.get("metric", "score"),
            calls=d.get("calls", 0),
            records=tuple(ExampleRecord.from_dict(r) for r in d["records"]),
        )


def compare(a: EvalResult, b: EvalResult) -> PairedComparison:
    """Paired comparison of two prompts on the examples both were scored on (B − A; :func:`paired_comparison`)."""
    sb = b.by_example
    common = [r for r in a.records if r.example_id in sb]
    return paired_comparison([r.score for r in common], [sb[r.example_id] for r in common])


@dataclass
class Evaluator:
    """Scores prompts for ``task`` through ``client`` (which carries the cache and the budget)."""

    task: Task
    client: ModelClient
    mode: Mode = "auto"
    progress: Callable[[int, int], None] | None = field(default=None, repr=False)
    """Called with (examples done, total) while an evaluation runs."""

    @property
    def resolved_mode(self) -> Literal["score", "generate"]:
        if self.mode != "auto":
            return self.mode
        return "score" if self.task.is_classification and self.client.model.capabilities.score else "generate"

    def evaluate(
        self,
        prompt: Prompt,
        examples: Sequence[Example] | None = None,
        *,
        split: str = "dev",
        client: ModelClient | None = None,
    ) -> EvalResult:
        """Score ``prompt`` on ``examples`` (default: the task's ``split``)."""
        if examples is None:
            examples = self.task.splits[split]
        plan = expand(prompt, examples, client or self.client)
        groups, client = plan.groups, plan.client  # per example: 1 sub-prompt, or K for In-Context Sampling
        owners = [ex for ex, g in zip(examples, groups, strict=True) for _ in g]
        messages = [m for g in groups for m in g]
        done = 0
        per_example = len(messages) / max(len(examples), 1)

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if self.progress:
                self.progress(round(done / per_example), len(examples))

        calls_before = client.budget.total.calls
        mode = self.resolved_mode
        if plan.aggregation == "confidence" and mode != "score":
            raise ConfigError(
                "aggregation 'confidence' sums label probabilities, so it needs label scoring (a task with labels "
                "and a model that can score); use aggregation='vote' for generation.",
                field="aggregation",
            )
        if mode == "score":
            if self.task.labels is None:
                raise ValueError(f"task '{self.task.name}' has no labels; label scoring needs them")
            labels = self.task.labels
            responses = client.score([ScoreRequest(messages=m, continuations=labels) for m in messages], on_done=tick)
            subs = [
                self._record_scored(ex, r.error, r.logprobs, labels, r.cached)
                for ex, r in zip(owners, responses, strict=True)
            ]
        else:
            gen = self.task.generation
            temperature = plan.temperature
            requests = [
                GenerationRequest(
                    messages=m,
                    max_tokens=gen.max_tokens,
                    stop=gen.stop,
                    temperature=temperature,
                    sample=j + 1 if temperature > 0 else 0,
                    labels=self.task.labels or (),
                )
                for g in groups
                for j, m in enumerate(g)
            ]
            responses_g = client.generate(requests, on_done=tick)
            subs = [
                self._record_generated(ex, r.error, r.text, r.cached) for ex, r in zip(owners, responses_g, strict=True)
            ]
        records, start = [], 0
        for ex, g in zip(examples, groups, strict=True):
            part = subs[start : start + len(g)]
            start += len(g)
            records.append(part[0] if len(part) == 1 else self._aggregate(ex, part, plan.aggregation))
        result = EvalResult(
            prompt_id=prompt.id,
            split=split,
            mode=mode,
            metric=self.task.metric.name,
            records=tuple(records),
            calls=client.budget.total.calls - calls_before,
        )
        if result.n_metric_errors:
            first = next(r for r in result.records if r.error_kind == "metric")
            logger.warning(
                "%d of %d examples of prompt %s on %s have no score, the metric failed on them; first (%s): %s",
                result.n_metric_errors,
                result.n,
                prompt.id,
                split,
                first.example_id,
                first.error,
            )
        return result

    def _record_generated(self, ex: Example, error: str | None, text: str, cached: bool) -> ExampleRecord:
        if error:
            return ExampleRecord(
                example_id=ex.id, prediction=None, score=0.0, error=error, error_kind="api", cached=cached
            )
        parsed = self.task.parser(text)
        if parsed is None:
            return ExampleRecord(
                example_id=ex.id,
                prediction=None,
                score=0.0,
                raw=text,
                error=f"{self.task.parser.name}: no answer found in the output",
                error_kind="parse",
                cached=cached,
            )
        return self._scored(ex, parsed, raw=text, cached=cached)

    def _aggregate(self, ex: Example, subs: Sequence[ExampleRecord], aggregation: Aggregation) -> ExampleRecord:
        """One record from an ICS prompt's K sub-prompt records (errors and unparsable answers abstain)."""
        raw = " | ".join(r.raw if r.prediction is not None else f"<{r.error_kind} error>" for r in subs)
        cached = all(r.cached for r in subs)
        answered = [r for r in subs if r.prediction is not None]  # a metric error on a sub-prompt still answered
        if not answered:
            api = all(r.error_kind == "api" for r in subs)
            return ExampleRecord(
                example_id=ex.id,
                prediction=None,
                score=0.0,
                raw=raw,
                error=f"all {len(subs)} sub-prompts failed: {subs[0].error}",
                error_kind="api" if api else "parse",
                cached=cached,
            )
        rows = [r.label_logprobs for r in answered if r.label_logprobs is not None]
        labels = self.task.labels or ()
        pred: str | None
        if rows and labels:
            summed = summed_probabilities(rows)
            if aggregation == "confidence":
                pred = labels[max(range(len(labels)), key=lambda i: summed[i])]
            else:
                pred = majority_vote([r.prediction for r in answered], dict(zip(labels, summed, strict=True)))
        else:
            pred = majority_vote([r.prediction for r in answered])
        assert pred is not None
        vector = tuple(aggregate_vector([list(r) for r in rows])) if rows else None  # takes lists (Vector)
        return self._scored(ex, pred, raw=raw, label_logprobs=vector, cached=cached)

    def _record_scored(
        self,
        ex: Example,
        error: str | None,
        logprobs: tuple[float, ...],
        labels: tuple[str, ...],
        cached: bool,
    ) -> ExampleRecord:
        if error or len(logprobs) != len(labels) or any(math.isnan(x) for x in logprobs):
            return ExampleRecord(
                example_id=ex.id,
                prediction=None,
                score=0.0,
                error=error or "label scoring returned malformed log-probs",
                error_kind="api",
                cached=cached,
            )
        best = max(range(len(labels)), key=lambda i: logprobs[i])
        pred = labels[best]
        return self._scored(ex, pred, raw=pred, label_logprobs=tuple(logprobs), cached=cached)

    def _scored(
        self,
        ex: Example,
        pred: str,
        *,
        raw: str,
        cached: bool,
        label_logprobs: tuple[float, ...] | None = None,
    ) -> ExampleRecord:
        """The record of an answered example: its metric score, or the metric's error (:func:`score_prediction`);
        an unlabeled example (no target: ``unsupervised`` predicting train inputs) has its prediction, score 0."""
        score, error = score_prediction(self.task.metric, pred, ex) if ex.labeled else (0.0, None)
        return ExampleRecord(
            example_id=ex.id,
            prediction=pred,
            score=score,
            raw=raw,
            error=error,
            error_kind="metric" if error else None,
            label_logprobs=label_logprobs,
            cached=cached,
        )
