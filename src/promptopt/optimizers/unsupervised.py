"""``unsupervised``: label-free prompt learning for classification (after "Unsupervised prompt learning for
classification with black-box LLMs"): the prompt and pseudo-labels of the unlabeled train inputs are learned
together, and reliable pseudo-labeled examples become the prompt's in-context demonstrations, in training and use.

It reads the task's ``labels`` and the train *inputs* only: train targets are never read (a task with
``unlabeled_train: true`` has none, and :meth:`~promptopt.core.task.Task.without_train_targets` strips them).
Per round:

1. the current prompt (first the seed) predicts the train pool through the common evaluator — label scoring where
   the backend can, else ``n_samples`` sampled answers (self-consistency) — giving each input a label
   distribution;
2. calibrated pseudo-labels and a class-balanced confident set (:mod:`promptopt.optimizers.pseudo_labels`);
3. candidates: the seed instruction (and, with ``n_instructions``, instructions the proposer induces from the
   pseudo-labeled examples) × demo sets of the confident set (per k in ``shots``, ``n_draws`` balanced draws) ×
   ``demo_formats``; each is scored on the confident examples it does not show, against their pseudo-labels,
   and the one that agrees best (ties: the earlier) becomes the next round's labeler.

It stops when the pseudo-labels stop changing (or after ``max_rounds``, or when the budget cannot pay a round and
the final evaluation). The last round's winner, with its pseudo-labeled demos, is the result: it is scored once on
the full dev split and *chosen* (:meth:`~promptopt.run.context.RunContext.choose`), not compared with the seed on
dev — dev labels select nothing (the only dev trial is that report; the optimizer never reads it). The runner's
test evaluation on the labeled test split judges it. No soft-prompt variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from promptopt.core.candidate import SEARCHED_DEMO_FORMATS, DemoFormat, Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.sampling import InContextSampling
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.ics import TupleSettingsMixin
from promptopt.optimizers.induction import induce, induction_prompts
from promptopt.optimizers.proposer import Proposer
from promptopt.optimizers.pseudo_labels import PseudoLabels, balanced_demos, pseudo_label
from promptopt.optimizers.screening import screen_reply
from promptopt.run.context import EvalRequest, RunContext

if TYPE_CHECKING:
    from promptopt.core.task import Task


@dataclass(frozen=True, kw_only=True)
class UnsupervisedConfig(OptimizerConfig):
    pool_size: int = field(default=32, metadata={"min": 2, "help": "train inputs pseudo-labeled (a seeded sample)"})
    per_label: int = field(default=6, metadata={"min": 1, "help": "confident pseudo-labeled examples per label"})
    shots: tuple[int, ...] = field(
        default=(4, 8), metadata={"min": 1, "help": "demos per candidate, in priority order"}
    )
    n_draws: int = field(default=2, metadata={"min": 1, "help": "balanced demo draws per k (0: most confident)"})
    demo_formats: tuple[DemoFormat, ...] = field(default=SEARCHED_DEMO_FORMATS, metadata={"help": "inline, turns"})
    max_rounds: int = field(default=3, metadata={"min": 1, "help": "pseudo-label / selection rounds at most"})
    n_samples: int = field(
        default=5, metadata={"min": 1, "help": "sampled answers per input without label scoring (self-consistency)"}
    )
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of those answers"})
    n_instructions: int = field(
        default=0, metadata={"min": 0, "help": "instructions the proposer induces from pseudo-labeled examples"}
    )
    proposer_temperature: float = field(default=0.7, metadata={"help": "the proposer's sampling temperature"})
    max_words: int = field(default=60, metadata={"min": 1, "help": "longest induced instruction kept"})


@register_optimizer("unsupervised")
class UnsupervisedOptimizer(TupleSettingsMixin, Optimizer):
    """Pseudo-labels of the unlabeled train inputs become demonstrations; candidates are selected by agreement
    with the pseudo-labels, iterated until they stop changing."""

    Config = UnsupervisedConfig
    config: UnsupervisedConfig
    needs_train_labels = False

    def min_calls(self, task: Task) -> int:
        """Predicting the pool once, one candidate on the confident set (at most the pool) and the final dev
        evaluation."""
        pool = min(self.config.pool_size, len(task.train))
        return pool * self._samples_for(task) + pool + len(task.dev)

    def run(self, ctx: RunContext) -> str | None:
        task, c = ctx.task, self.config
        if not task.is_classification:
            raise ConfigError(
                f"optimizer 'unsupervised' learns pseudo-labels from a label set, and task '{task.name}' has no "
                "'labels' (it is not a classification task). Use a classification task, or a labeled optimizer.",
                field="optimizer",
            )
        self.ctx = ctx
        self.proposer = Proposer(
            ctx.proposer, temperature=c.proposer_temperature, max_tokens=128, before_call=ctx.stop_if_asked
        )
        train = list(task.train)
        self.pool = tuple(ctx.rng.sample(train, min(c.pool_size, len(train))))
        labeler, best = task.seed_prompt(), None
        previous: dict[str, str] | None = None
        stop = "optimizer finished"
        self.notes = ()
        for round_ in range(1, c.max_rounds + 1):
            if not self._affords(len(self.pool) * self._samples_for(task)):
                stop = "budget: no calls left for another round"
                break
            pseudo = self._pseudo_label(labeler)
            changed = None if previous is None else sum(previous[i] != pseudo.labels[i] for i in previous)
            self.notes = (*self.notes, self._note(round_, pseudo, changed))
            if changed == 0:
                stop = "pseudo-labels converged"
                break
            previous = pseudo.labels
            winner = self._select(self._candidates(pseudo), pseudo)
            if winner is None:
                stop = "budget: no candidate of this round could be scored"
                break
            labeler = best = winner
        else:
            stop = f"max_rounds ({c.max_rounds}) reached"
        if best is not None:
            ctx.choose(ctx.evaluate(best))
        return stop

    # -- steps -----------------------------------------------------------------------------------------------
    def _pseudo_label(self, labeler: Prompt) -> PseudoLabels:
        """The labeler's predictions of the pool as pseudo-labels (its own demos keep their labels)."""
        task, c = self.ctx.task, self.config
        assert task.labels is not None
        predictor = labeler
        if self._samples_for(task) > 1:  # self-consistency: K identical demo sets, sampled
            ics = InContextSampling(
                k=c.n_samples, shots=len(labeler.demos), demo_sets=(labeler.demos,) * c.n_samples,
                temperature=c.temperature,
            )  # fmt: skip
            predictor = replace(labeler, demos=(), ics=ics)
        record = self.ctx.evaluate(predictor, self.pool)
        assert record.result is not None
        fixed = {d.id: d.answer for d in labeler.demos}
        return pseudo_label(self.pool, record.result, task.labels, task.parser, per_label=c.per_label, fixed=fixed)

    def _candidates(self, pseudo: PseudoLabels) -> list[Prompt]:
        """Instructions × balanced demo sets × demo formats, in priority order (k, draw, instruction, format)."""
        c, seed = self.config, self.ctx.task.seed_prompt()
        instructions = [seed, *self._induced(seed, pseudo.selected)]
        room = max(1, len(pseudo.selected) - 2)  # keep confident examples to score on
        out: dict[str, Prompt] = {}
        for k in dict.fromkeys(min(k, room) for k in c.shots):
            for draw in range(c.n_draws):
                demos = balanced_demos(pseudo.selected, k, draw, str(self.ctx.seed))
                meta = {"demos": f"pseudo-labeled k={k} draw {draw}"}
                for base in instructions:
                    for fmt in c.demo_formats:
                        p = replace(base, demos=demos, demo_format=fmt, parents=(), origin="unsupervised",
                                    meta={**meta, "demo_format": fmt})  # fmt: skip
                        out.setdefault(p.id, p)
        return list(out.values())

    def _induced(self, seed: Prompt, examples: tuple[Example, ...]) -> list[Prompt]:
        """Up to ``n_instructions`` instructions the proposer induces from pseudo-labeled examples (screened)."""
        n = self.config.n_instructions
        if not n or not examples:
            return []
        replies = induce(self.proposer, induction_prompts(examples, n, n_demos=len(examples), rng=self.ctx.rng))
        seen, out = {seed.instruction}, []
        forbidden = [str(v) for ex in examples for v in ex.inputs.values()]
        for text in replies:
            s = screen_reply(text, seed, seen=seen, max_words=self.config.max_words, forbidden=forbidden, strict=False)
            if s.instruction is None:
                self.ctx.reject(s.reason or "invalid")
                continue
            seen.add(s.instruction)
            out.append(seed.with_instruction(s.instruction, origin="unsupervised:induce"))
        return out

    def _select(self, candidates: list[Prompt], pseudo: PseudoLabels) -> Prompt | None:
        """The candidate that agrees best with the pseudo-labels of the confident examples it does not show
        (ties: higher mean label confidence there, then the earlier); None if the budget paid for none."""
        scored: list[tuple[float, float, int, Prompt]] = []
        for i, cand in enumerate(candidates):
            shown = {d.id for d in cand.demos}
            held = tuple(ex for ex in pseudo.selected if ex.id not in shown)
            if not held or not self._affords(len(held)):
                break
            (record,) = self.ctx.evaluate_all([EvalRequest(cand, held)])
            if record.result is None:
                continue
            margins = [max(r.label_logprobs) for r in record.result.records if r.label_logprobs]
            confidence = sum(margins) / len(margins) if margins else 0.0
            scored.append((record.result.mean, confidence, -i, cand))
        return max(scored, key=lambda t: t[:3])[3] if scored else None

    # -- internals ---------------------------------------------------------------------------------------------
    def _samples_for(self, task: Task) -> int:
        """Sampled answers per input: 1 with label scoring, ``n_samples`` without."""
        ctx = getattr(self, "ctx", None)
        scores = ctx.evaluator.resolved_mode == "score" if ctx is not None else True
        return 1 if scores else self.config.n_samples

    def _affords(self, calls: int) -> bool:
        """``calls`` more fit in the budget with the final full-dev evaluation still paid."""
        left = self.ctx.calls_left()
        return left is None or calls + len(self.ctx.task.dev) <= left

    def _note(self, round_: int, pseudo: PseudoLabels, changed: int | None) -> str:
        counts = {label: 0 for label in self.ctx.task.labels or ()}
        for label in pseudo.labels.values():
            counts[label] += 1
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        delta = "" if changed is None else f", {changed} changed"
        return (
            f"unsupervised round {round_}: pseudo-labels of {len(pseudo.labels)} train inputs ({shown}{delta}); "
            f"{len(pseudo.selected)} confident kept, class-balanced"
        )
