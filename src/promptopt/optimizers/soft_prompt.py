"""``soft_prompt``: prompt tuning (Lester et al., 2021) on an in-process Hugging Face model.

``n_tokens`` virtual-token embeddings (PEFT ``PromptTuningConfig``: text, random or vocab init) are placed
before the task's seed prompt and trained by backpropagation on the train split while the model stays
frozen. The loss is the negative log-likelihood of the gold label (classification tasks) or of the target
text and end-of-turn (generation tasks), as the assistant reply. AdamW with warmup and a linear, cosine or
constant schedule, gradient clipping, bf16 autocast on CUDA (float32 on CPU); the data order is seeded
with the run seed and the init with ``init_seed``.

Every ``eval_every`` steps the current soft prompt is saved (a PEFT adapter directory) and proposed as a
candidate: the seed prompt plus ``soft_prompt=<dir>``, scored on dev by the common evaluator like any
other candidate, so the run keeps the best checkpoint by dev score. Training stops after ``max_steps``,
after ``patience`` evaluations without a dev improvement, or when the budget cannot pay for another step
and a dev evaluation.

**Budget.** One *call* (role ``train``) is one training example's forward and backward pass; its tokens
are the prompt, virtual and target tokens. Dev evaluations cost one call per example, as usual.

**Resume.** Checkpoints live in ``<run dir>/soft_prompt/step-NNNNN`` (without a run directory in
``$PROMPTOPT_HOME/soft_prompts/<task>-<random>/``, where the result's best prompt points), and the training
state (soft prompt, AdamW and schedule state, data position) is saved after every step. A resumed run re-proposes the
saved checkpoints (their scores come from the cache) and continues training from the saved state.

**Robust soft prompt** (:mod:`promptopt.optimizers.soft_robust`): with ``paraphrases`` (or ``train_instructions``)
each example is trained under ``paraphrases_per_example`` equivalent instructions per step, with a ``consistency`` term
that makes their answer distributions agree; each render is one training call.

**Task prompt vectors** (:mod:`promptopt.models.vectors`, needs a seeded ``init``): ``tpv`` starts from the init
plus a weighted sum of stored task vectors (``{task: weight}``, or ``"all"``: every other task stored for
this base model, init and seed, weight 1, or the plain init when there is none yet); ``save_vector`` stores
this task's vector (best checkpoint − init) after each new best.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.models.budget import Usage
from promptopt.models.cache import promptopt_home
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.paraphrases import Source
from promptopt.prompts.ics import render_all
from promptopt.run.context import RunContext, RunState

if TYPE_CHECKING:
    from promptopt.core.data import Example
    from promptopt.core.task import Task
    from promptopt.run.history import TrialRecord

logger = logging.getLogger(__name__)

Init = Literal["text", "random", "vocab"]
Schedule = Literal["linear", "cosine", "constant"]
StartFrom = Literal["seed", "best", "significant"]
STATE_FILE = "train_state.pt"


@dataclass(frozen=True, kw_only=True)
class SoftPromptConfig(OptimizerConfig):
    n_tokens: int = field(default=16, metadata={"min": 1, "help": "virtual tokens"})
    init: Init = field(default="text", metadata={"help": "text | random | vocab (PEFT prompt_tuning_init)"})
    init_text: str | None = field(default=None, metadata={"help": "text init; default: the seed instruction"})
    init_seed: int = field(default=0, metadata={"help": "seed of a random/vocab init (the origin of vectors)"})
    lr: float = field(default=0.01, metadata={"min": 0.0, "help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0, "help": "AdamW weight decay"})
    schedule: Schedule = field(default="linear", metadata={"help": "linear | cosine | constant, after warmup"})
    warmup_steps: int = field(default=0, metadata={"min": 0, "help": "linear warmup steps"})
    batch_size: int = field(default=8, metadata={"min": 1, "help": "training examples per step"})
    max_steps: int = field(default=100, metadata={"min": 1, "help": "training steps at most"})
    eval_every: int = field(default=10, metadata={"min": 1, "help": "steps between dev evaluations"})
    patience: int = field(default=3, metadata={"min": 0, "help": "evaluations without improvement; 0: off"})
    max_grad_norm: float | None = field(default=1.0, metadata={"min": 0.0, "help": "gradient clipping"})
    tpv: Mapping[str, float] | str | None = field(
        default=None, metadata={"help": "start from init + Σ weight·vector: {task: weight} or 'all'"}
    )
    tpv_store: str | None = field(default=None, metadata={"help": "vector store dir ($PROMPTOPT_HOME/vectors)"})
    save_vector: bool = field(default=False, metadata={"help": "store this task's vector (best − init)"})
    paraphrases: int = field(default=0, metadata={"min": 0, "help": "robust: paraphrases to train under; 0: off"})
    paraphrase_source: Source = field(default="rules", metadata={"help": "rules | proposer | both"})
    train_instructions: tuple[str, ...] | None = field(
        default=None, metadata={"help": "robust: these equivalent instructions instead of generated paraphrases"}
    )
    paraphrases_per_example: int = field(default=2, metadata={"min": 1, "help": "robust: instructions per example"})
    consistency: float = field(default=1.0, metadata={"min": 0.0, "help": "robust: weight of the consistency term"})
    start_from: StartFrom = field(
        default="seed",
        metadata={
            "help": "seed | best | significant: train under the seed prompt, the run's best so far, or the best "
            "only if its paired dev gain over the seed has a 95% CI above 0"
        },
    )

    @property
    def robust(self) -> bool:
        return bool(self.paraphrases or self.train_instructions)

    @property
    def calls_per_step(self) -> int:
        """Training calls of one step: each example under ``paraphrases_per_example`` instructions when robust."""
        return self.batch_size * (self.paraphrases_per_example if self.robust else 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.tpv, Mapping):
            object.__setattr__(self, "tpv", {str(k): float(v) for k, v in self.tpv.items()})
        elif self.tpv not in (None, "all"):
            raise ConfigError(f"must be a mapping {{task: weight}} or 'all', got {self.tpv!r}", field="tpv")
        if (self.tpv is not None or self.save_vector) and self.init == "text":
            raise ConfigError(
                "task prompt vectors (tpv, save_vector) need a seeded init: set init to 'random' or 'vocab'.",
                field="init",
            )


@register_optimizer("soft_prompt")
class SoftPromptOptimizer(Optimizer):
    """Prompt tuning: train virtual-token embeddings on the train split, keep the best checkpoint by dev."""

    Config = SoftPromptConfig
    config: SoftPromptConfig
    needs_trainable_model = True

    def min_calls(self, task: Task) -> int:
        """One training step, then the dev evaluation of its checkpoint."""
        return self.config.calls_per_step + len(task.dev)

    def checkpoint_calls(self, task: Task) -> int:
        """A full checkpoint: ``eval_every`` training steps, then its dev evaluation."""
        return self.config.calls_per_step * self.config.eval_every + len(task.dev)

    def run(self, ctx: RunContext) -> str | None:
        from promptopt.models.soft import trainable_model

        self.ctx = ctx
        self.base = trainable_model(ctx.task_model, purpose="the soft_prompt optimizer")
        self.budget = ctx.budget
        self.folder = (
            ctx.artifacts / "soft_prompt"
            if ctx.artifacts is not None
            else promptopt_home() / "soft_prompts" / f"{ctx.task.name}-{os.urandom(4).hex()}"
        )
        self.best: float | None = None
        self.since_best = 0
        best = self._start_prompt(ctx.state)  # the text prompt the soft prompt is trained under (demos included)
        start = dataclasses.replace(best, soft_prompt=None) if best.soft_prompt else best
        # a resumed run: its saved checkpoints first (their scores come from the cache)
        for path in sorted(self.folder.glob("step-*")) if self.folder.is_dir() else []:
            self._observe(ctx.evaluate(self._candidate(start, path)))
            if stop := self._early_stop():
                return stop
        trainer = _Trainer(self, start)
        while True:  # train eval_every steps, save a checkpoint, score it on dev
            checkpoint, finished = trainer.run_until_checkpoint()
            if checkpoint is None:
                return finished
            self._observe(ctx.evaluate(self._candidate(start, checkpoint)))
            if stop := self._early_stop() or finished:
                return stop

    def _start_prompt(self, state: RunState) -> Prompt:
        """The prompt ``start_from`` names. ``significant`` guards against training under a dev artefact: on
        32 dev examples a demo set that wins by one or two examples often loses on test (sst2 in
        ``benchmarks/results/fewshot.md``), and a soft prompt trained under it inherits the loss."""
        how, seed, best = self.config.start_from, state.seed_record, state.best()
        if how == "seed":
            return seed.prompt
        if best.prompt.id == seed.prompt.id:
            self.notes = (*self.notes, "soft prompt trained under the seed prompt: still the best so far")
            return seed.prompt
        if how == "significant":
            from promptopt.evaluation.evaluator import compare

            assert seed.result is not None and best.result is not None
            gain = compare(seed.result, best.result)
            if gain.ci_low <= 0:
                self.notes = (
                    *self.notes,
                    f"soft prompt trained under the seed prompt: the best so far ({best.prompt.id}) gained "
                    f"{gain.diff:+.3f} on dev [95% CI {gain.ci_low:+.3f}–{gain.ci_high:+.3f}], not significant",
                )
                return seed.prompt
        self.notes = (*self.notes, f"soft prompt trained under the best prompt so far ({best.prompt.id})")
        return best.prompt

    def _observe(self, record: TrialRecord) -> None:
        if record.result is None or record.prompt.soft_prompt is None:
            return
        if self.best is None or record.mean > self.best:
            self.best, self.since_best = record.mean, 0
            if self.config.save_vector:
                self._save_vector(Path(record.prompt.soft_prompt))
        else:
            self.since_best += 1

    def _early_stop(self) -> str | None:
        patience = self.config.patience
        if patience and self.since_best >= patience:
            return f"early stopping: no dev improvement in {patience} evaluations"
        return None

    # -- helpers --------------------------------------------------------------------------------
    def _candidate(self, seed: Prompt, path: Path) -> Prompt:
        step = int(path.name.split("-")[1])
        return dataclasses.replace(
            seed, soft_prompt=str(path), parents=(seed.id,), origin="soft_prompt", meta={"step": step}
        )

    def init_text(self) -> str | None:
        if self.config.init != "text":
            return None
        return self.config.init_text or self.ctx.task.instruction

    def init_values(self) -> Any:
        """The soft prompt before training: the PEFT init, plus the ``tpv`` combination if set."""
        from promptopt.models.soft import base_model_id, init_embeddings

        c = self.config
        values = init_embeddings(self.base, c.n_tokens, c.init, text=self.init_text(), seed=c.init_seed)
        if c.tpv is None:
            return values
        store = self._store()
        key = {"base_model": base_model_id(self.base), "init": c.init, "init_seed": c.init_seed}
        weights = (
            c.tpv if isinstance(c.tpv, Mapping) else {t: 1.0 for t in store.tasks(**key) if t != self.ctx.task.name}
        )
        if not weights:  # tpv 'all' before any other task was tuned: the plain init
            logger.warning(
                "tpv 'all': no other task's vector is stored for %s in %s; starting from the init", key, store.root
            )
            return values
        vector = store.combine(weights, **key)
        vector.check(**key, shape=tuple(values.shape))
        logger.info("soft prompt initialised from task prompt vectors %s", vector.label)
        return vector.apply(values)

    def _store(self) -> Any:
        from promptopt.models.vectors import VectorStore

        return VectorStore(self.config.tpv_store)

    def _save_vector(self, path: Path) -> None:
        from promptopt.models.soft import base_model_id, init_embeddings, load_soft_prompt
        from promptopt.models.vectors import TaskPromptVector

        c = self.config
        init = init_embeddings(self.base, c.n_tokens, c.init, seed=c.init_seed)
        vector = TaskPromptVector.from_prompts(
            load_soft_prompt(path).embeddings,
            init,
            task=self.ctx.task.name,
            base_model=base_model_id(self.base),
            init=c.init,
            init_seed=c.init_seed,
        )
        logger.info("task prompt vector of %s stored in %s", self.ctx.task.name, self._store().put(vector))


def training_examples(prompt: Prompt, train: Sequence[Example]) -> list[Example]:
    """The train examples a soft prompt under ``prompt`` learns from: those it does not show as demos (their
    answer would be in the context), unless it shows them all."""
    shown = {d.id for d in prompt.demos}
    return [ex for ex in train if ex.id not in shown] or list(train)


class _Trainer:
    """The training loop's state: soft prompt parameter, AdamW, schedule, data position; saved every step."""

    def __init__(self, owner: SoftPromptOptimizer, seed: Prompt) -> None:
        import torch
        import transformers

        from promptopt.models.soft import SoftPromptModel, peft_config

        self.torch = torch
        self.owner = owner
        c = self.config = owner.config
        task = owner.ctx.task
        # each example as the model sees it under the start prompt (an ICS prompt: its first sub-prompt, with the
        # demos it picks for that example)
        train = training_examples(seed, task.train)
        self.examples = [(render_all(seed, [ex])[0][0], ex.answer) for ex in train]
        self.robust = None
        if c.robust:
            from promptopt.optimizers.soft_robust import paraphrase_training

            self.robust = paraphrase_training(owner.ctx, c, seed, train)
            owner.notes = (
                *owner.notes,
                f"robust soft prompt: trained under {len(self.robust.instructions)} instructions",
            )
        self.eos = not task.is_classification
        self.dev_cost = len(task.dev)
        self.seed = owner.ctx.seed
        base = owner.base
        base.model.requires_grad_(False)
        self.peft_config = peft_config(base, c.n_tokens, c.init, text=owner.init_text())
        self.param = torch.nn.Parameter(owner.init_values().to(base.device))
        self.model = SoftPromptModel(base, self.param, tag="training")
        self.optimizer = torch.optim.AdamW([self.param], lr=c.lr, weight_decay=c.weight_decay)
        name = "constant_with_warmup" if c.schedule == "constant" else c.schedule
        self.scheduler = transformers.get_scheduler(
            name, self.optimizer, num_warmup_steps=c.warmup_steps, num_training_steps=c.max_steps
        )
        self.step = self.epoch = self.pos = self.last_checkpoint = 0
        self.losses: list[float] = []
        owner.folder.mkdir(parents=True, exist_ok=True)
        if (owner.folder / STATE_FILE).is_file():
            self._restore()
        cuda = base.device.type == "cuda" and base.dtype == "float32" and torch.cuda.is_bf16_supported()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def run_until_checkpoint(self) -> tuple[Path | None, str | None]:
        """Train up to the next evaluation point; returns (checkpoint to evaluate, reason training ended)."""
        c, budget = self.config, self.owner.budget
        while True:
            if self.step >= c.max_steps:
                return self._final(f"trained {c.max_steps} steps (max_steps)")
            if self.step - self.last_checkpoint >= c.eval_every:
                path = self._checkpoint()
                if path is not None:
                    return path, None
                continue
            limit = budget.budget.max_calls
            left = limit - budget.limited().calls if limit is not None else None
            if left is not None and left < c.calls_per_step + self.dev_cost:
                return self._final(f"call budget: {left} calls left, too few for a training step and a dev evaluation")
            budget.allow("train", c.calls_per_step)  # raises BudgetExhausted for the time, token and cost limits
            self._train_step()

    def _final(self, reason: str) -> tuple[Path | None, str]:
        return (self._checkpoint() if self.step > self.last_checkpoint else None), reason

    def _train_step(self) -> None:
        torch, c = self.torch, self.config
        indices = self._next_indices(c.batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            if self.robust is not None:
                loss, tokens, calls = self.robust.loss(self.model, indices, self.step, eos=self.eos)
            else:
                loss, tokens = self.model.nll([self.examples[i] for i in indices], eos=self.eos)
                calls = len(indices)
        loss.backward()
        if c.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([self.param], c.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.losses.append(loss.item())
        self.owner.budget.charge("train", Usage(calls=calls, prompt_tokens=tokens))
        self.owner.budget.note_calls("train", calls)
        self._save()

    def _next_indices(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            order = list(range(len(self.examples)))
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
            take = order[self.pos : self.pos + n - len(out)]
            out += take
            self.pos += len(take)
            if self.pos >= len(order):
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def _checkpoint(self) -> Path | None:
        """Save the current soft prompt for evaluation (None when a resumed run already has this one)."""
        from promptopt.models.soft import save_soft_prompt

        c = self.config
        recent = self.losses[self.last_checkpoint :]
        loss = sum(recent) / len(recent) if recent else float("nan")
        logger.info("soft prompt step %d: mean train loss %.4f", self.step, loss)
        path = self.owner.folder / f"step-{self.step:05d}"
        fresh = not path.is_dir()
        if fresh:
            save_soft_prompt(
                path,
                self.param,
                base=self.owner.base,
                config=self.peft_config,
                task=self.owner.ctx.task.name,
                init=c.init,
                init_seed=c.init_seed,
                step=self.step,
                train_loss=loss,
            )
        self.last_checkpoint = self.step
        self._save()
        return path if fresh else None

    def _state(self) -> dict[str, Any]:
        return {
            "param": self.param.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "pos": self.pos,
            "last_checkpoint": self.last_checkpoint,
            "losses": self.losses,
        }

    def _save(self) -> None:
        path = self.owner.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        self.torch.save(self._state(), tmp)
        tmp.replace(path)

    def _restore(self) -> None:
        state = self.torch.load(self.owner.folder / STATE_FILE, weights_only=True)
        with self.torch.no_grad():
            self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.last_checkpoint, self.losses = state["last_checkpoint"], list(state["losses"])
        logger.info("soft prompt training resumed at step %d", self.step)
