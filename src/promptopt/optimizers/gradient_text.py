"""``gradient_text``: a discrete text prompt chosen with the in-process model's gradients (AutoPrompt, GReaTer).

The optimized span is the instruction's tokens (``edit_instruction``) and/or ``n_free`` free tokens appended to it.
Each step:

1. **Gradient.** On ``batch_size`` train examples (a seeded draw per step), the gradient of the task loss with
   respect to the one-hot tokens of the span (:mod:`promptopt.models.token_gradients`): the negative
   log-likelihood of the gold label (classification) or of the target and end-of-turn (generation); with
   ``reasoning`` (GReaTer), the model first writes its own reasoning under the current prompt and the loss is the
   gold answer's after that reasoning and ``answer_cue``. ``fluency_weight`` adds the instruction's own mean token
   NLL (log-perplexity) so that substitutions that keep it readable rank higher.
2. **Candidates.** ``n_candidates`` distinct single-token swaps: a random span position, a random one of the
   ``top_k`` tokens with the most negative gradient there. Special and non-printable tokens are never used, and a
   candidate must survive decode → re-encode unchanged, so the exported text reproduces its tokens.
3. **Race.** The candidates race on a dev minibatch (:mod:`.racing`; the current prompt takes part for free with its
   full-dev scores); the race winner, if it beats the current prompt there, is confirmed on full dev and becomes
   the current prompt if it scores higher. ``patience`` steps without a new best end the run.

**Budget.** A gradient pass costs one ``train`` call per example (prompt and target tokens; with ``reasoning``
one more per example for the generated reasoning, its tokens included), like a ``soft_prompt`` step. Each step
is planned before it starts (:mod:`.planning`): its gradient pass, the races of as many candidates as fit and the
confirmation of the winner on full dev, so the budget never runs out between a race and its confirmation.

**Resume.** Each step's gradient pass (its candidates) is saved in ``<run dir>/gradient_text/step-NNN.json``; a
resumed run replays the saved steps (evaluations from the cache, no training call paid twice).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.core.exceptions import ConfigError
from promptopt.models.budget import Usage
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.planning import affordable, race_worst_case
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of, race_trials
from promptopt.prompts.ics import render_all

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example
    from promptopt.core.task import Task
    from promptopt.models.token_gradients import Row
    from promptopt.run.context import RunContext
    from promptopt.run.history import TrialRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GradientTextConfig(RacingConfig):
    edit_instruction: bool = field(default=True, metadata={"help": "optimize the instruction's own tokens"})
    n_free: int = field(default=0, metadata={"min": 0, "help": "free tokens appended to the instruction, optimized"})
    free_token: str = field(default=" the", metadata={"help": "text whose first token starts each free token"})
    steps: int = field(default=12, metadata={"min": 1, "help": "gradient steps at most"})
    batch_size: int = field(default=8, metadata={"min": 1, "help": "train examples per gradient pass"})
    top_k: int = field(default=16, metadata={"min": 1, "help": "candidate tokens per position, by the gradient"})
    n_candidates: int = field(default=6, metadata={"min": 1, "help": "single-token swaps raced per step"})
    minibatch_size: int = field(default=8, metadata={"min": 1, "help": "dev examples of the first race stage"})
    fluency_weight: float = field(default=0.0, metadata={"min": 0.0, "help": "weight of the instruction's NLL"})
    patience: int = field(default=4, metadata={"min": 0, "help": "steps without a new best before stopping; 0: off"})
    reasoning: bool = field(default=False, metadata={"help": "GReaTer: loss of the answer after own reasoning"})
    reasoning_tokens: int = field(default=96, metadata={"min": 1, "help": "tokens of generated reasoning"})
    answer_cue: str = field(default="Therefore, the answer is", metadata={"help": "between reasoning and answer"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.edit_instruction and not self.n_free:
            raise ConfigError("nothing to optimize: set edit_instruction or n_free > 0", field="n_free")


@dataclass
class _Step:
    """One gradient pass: the span it was taken at and the candidate spans it proposed."""

    ids: list[int]
    candidates: list[list[int]]
    loss: float
    fluency: float


@register_optimizer("gradient_text")
class GradientTextOptimizer(Optimizer):
    """Token swaps ranked by the gradient of the task loss, raced on dev; a plain text prompt comes out."""

    Config = GradientTextConfig
    config: GradientTextConfig
    needs_trainable_model = True

    def min_calls(self, task: Task) -> int:
        """One gradient pass, one candidate's race and its confirmation on full dev."""
        c, n_dev = self.config, len(task.dev)
        init = n_dev if c.n_free else 0  # the start prompt with its free tokens, on full dev
        return init + self._pass_calls(task) + race_worst_case(c.race_sizes(c.minibatch_size, n_dev), n_dev) + n_dev

    def run(self, ctx: RunContext) -> str | None:
        from promptopt.models.hf.vocab import allowed_tokens
        from promptopt.models.soft import trainable_model

        c = self.config
        self.ctx = ctx
        self.base = trainable_model(ctx.task_model, purpose="the gradient_text optimizer")
        self.tokenizer = self.base.tokenizer
        self.allowed = allowed_tokens(self.tokenizer, self.base.model.get_input_embeddings().num_embeddings)
        self.folder = ctx.artifacts / "gradient_text" if ctx.artifacts is not None else None
        self.racing = RaceTotals()
        current = ctx.seed_record
        ids, self.positions = self._span(current.prompt.instruction)
        start = current.prompt
        if ids != self._encode(start.instruction):  # free tokens appended: the start prompt is scored first
            current = ctx.evaluate(start.with_instruction(self.tokenizer.decode(ids), origin="gradient_text:init"))
        dev = list(ctx.task.dev)
        self.sizes = c.race_sizes(c.minibatch_size, len(dev))
        since_best = 0
        for step in range(c.steps):
            n = self._affordable()
            if not n:
                return f"budget planned out before gradient step {step + 1}"
            grad_step = self._gradient_step(step, current.prompt, ids, n)
            if not grad_step.candidates:
                return "no candidate swap survives the vocabulary and round-trip filters"
            winner = self._race(current, grad_step, dev)
            if winner is not None and winner.mean > current.mean:
                current, ids, since_best = winner, self._encode(winner.prompt.instruction), 0
            else:
                since_best += 1
                if c.patience and since_best >= c.patience:
                    return f"early stopping: no dev improvement in {c.patience} steps"
        return None

    # -- the span ----------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        from promptopt.models.hf.vocab import encode_text

        return encode_text(self.tokenizer, text)

    def _span(self, instruction: str) -> tuple[list[int], list[int]]:
        """The start span's token ids and the positions optimized (instruction and/or appended free tokens).

        Free tokens start as the first token of ``free_token``, or, if the span would not survive the round trip
        with it, as the first allowed token (in id order) with which it does."""
        from promptopt.models.hf.vocab import round_trips

        c = self.config
        own = self._encode(instruction)
        if not own or not round_trips(self.tokenizer, own):
            raise ConfigError(
                f"the instruction {instruction!r} is empty or does not survive decode and re-encode unchanged "
                "(surrounding whitespace?); gradient_text optimizes its tokens, so edit it",
                field="instruction",
            )
        ids = own
        if c.n_free:
            first = self._encode(c.free_token)[:1]
            fill = (t for t in [*first, *self.allowed.nonzero().flatten().tolist()] if self.allowed[t])
            ids = next((x for t in fill if round_trips(self.tokenizer, x := own + [t] * c.n_free)), own)
        positions = [i for i in range(len(ids)) if (i >= len(own) or c.edit_instruction)]
        return ids, positions

    # -- one step ------------------------------------------------------------------------------------
    def _gradient_step(self, step: int, prompt: Prompt, ids: list[int], n: int) -> _Step:
        """The step's gradient pass and candidates: replayed from its file when a resumed run saved it."""
        from promptopt.models.token_gradients import sample_swaps, token_gradients

        c, budget = self.config, self.ctx.budget
        path = self.folder / f"step-{step:03d}.json" if self.folder is not None else None
        if path is not None and path.is_file():
            saved = _Step(**json.loads(path.read_text(encoding="utf-8")))
            if saved.ids == ids and len(saved.candidates) <= n:
                budget.note_calls("train", self._pass_calls(self.ctx.task))
                return saved
        budget.allow("train", self._pass_calls(self.ctx.task))  # raises BudgetExhausted: time, token, cost limits
        rows, usage = self._rows(step, prompt)
        task = self.ctx.task
        result = token_gradients(
            self.base, ids, rows, eos=not (task.is_classification or c.reasoning), fluency_weight=c.fluency_weight
        )
        usage.add(Usage(calls=len(rows), prompt_tokens=result.tokens))
        budget.charge("train", usage)
        budget.note_calls("train", usage.calls)
        rng = random.Random(f"{self.ctx.seed}:swaps:{step}")
        seen = {tuple(self._encode(r.prompt.instruction)) for r in self.ctx.history}
        candidates = sample_swaps(
            self.tokenizer, ids, result.grad, positions=self.positions, allowed=self.allowed, top_k=c.top_k, n=n,
            rng=rng, exclude=seen,
        )  # fmt: skip
        logger.info("gradient_text step %d: loss %.4f, fluency %.3f", step + 1, result.loss, result.fluency)
        out = _Step(ids=list(ids), candidates=candidates, loss=result.loss, fluency=result.fluency)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(dataclasses.asdict(out)) + "\n", encoding="utf-8")
        return out

    def _rows(self, step: int, prompt: Prompt) -> tuple[list[Row], Usage]:
        """The step's train batch as loss rows (instruction rendered as the span), and what making them cost."""
        from promptopt.models.base import GenerationRequest
        from promptopt.models.token_gradients import SPAN, Row

        c, task = self.config, self.ctx.task
        train = list(task.train)
        batch = random.Random(f"{self.ctx.seed}:batch:{step}").sample(train, min(c.batch_size, len(train)))
        spanned = [render_all(dataclasses.replace(prompt, instruction=SPAN), [ex])[0][0] for ex in batch]
        if not any(SPAN in m.content for m in spanned[0]):
            raise ConfigError("the template does not show the instruction: nothing to optimize", field="template")
        if not c.reasoning:
            return [Row(m, ex.answer) for m, ex in zip(spanned, batch, strict=True)], Usage()
        requests = [
            GenerationRequest(messages=render_all(prompt, [ex])[0][0], max_tokens=c.reasoning_tokens) for ex in batch
        ]
        replies = self.base.generate(requests)
        usage = Usage(
            calls=len(replies),
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            completion_tokens=sum(r.completion_tokens for r in replies),
        )
        rows = [
            Row(m, ex.answer, context=f"{r.text.strip()}\n{c.answer_cue} ")
            for m, ex, r in zip(spanned, batch, replies, strict=True)
        ]
        return rows, usage

    def _race(self, current: TrialRecord, step: _Step, dev: list[Example]) -> TrialRecord | None:
        """Race the step's candidates against ``current``; the winner's full-dev record if it was confirmed."""
        ctx = self.ctx
        parent = current.prompt
        kids = [self._child(parent, step, ids) for ids in step.candidates]
        if not self.sizes:  # dev too small to race on: every candidate on full dev
            return max(ctx.evaluate_all(kids), key=lambda r: r.mean, default=None)
        minibatch = ctx.rng.sample(dev, self.sizes[-1])
        race = Race(kids, minibatch, self.sizes, alpha=self.config.race_alpha, incumbents=incumbents_of([current]))
        race_trials(ctx, race)
        assert self.racing is not None
        self.racing.add(race)
        ranking = race.ranking()
        if not ranking:
            return None
        best, mean = ranking[0]
        scored = current.result.by_example if current.result is not None else {}
        parent_mean = sum(scored.get(ex.id, 0.0) for ex in race.examples) / len(race.examples)
        return ctx.evaluate(best) if mean > parent_mean else None

    def _child(self, parent: Prompt, step: _Step, ids: list[int]) -> Prompt:
        """The candidate with span ``ids``; its meta names the swap and the step's train loss."""
        pos = next(i for i, (a, b) in enumerate(zip(step.ids, ids, strict=True)) if a != b)
        swap = f"{self.tokenizer.decode([step.ids[pos]])!r} -> {self.tokenizer.decode([ids[pos]])!r}"
        text = self.tokenizer.decode(ids)
        return parent.with_instruction(
            text, origin="gradient_text", step=self.ctx.next_step, position=pos, swap=swap, train_loss=step.loss
        )

    # -- budget --------------------------------------------------------------------------------------
    def _pass_calls(self, task: Task) -> int:
        """Train calls of one gradient pass: one per example, twice with generated reasoning."""
        return min(self.config.batch_size, len(task.train)) * (2 if self.config.reasoning else 1)

    def _affordable(self) -> int:
        """Candidates the next step can race, its gradient pass and the winner's confirmation paid first."""
        ctx, c = self.ctx, self.config
        n_dev = len(ctx.task.dev)
        per = race_worst_case(self.sizes, n_dev)
        confirm = ctx.confirmation_cost(self.sizes[-1]) if self.sizes else 0
        left = ctx.calls_left()
        room = None if left is None else left - self._pass_calls(ctx.task)
        if room is not None and room <= 0:
            return 0
        return len(affordable(range(c.n_candidates), room, lambda _: per, lambda _: confirm))
