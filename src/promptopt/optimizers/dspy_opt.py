"""``dspy``: a DSPy teleprompter compiles the task, and promptopt's evaluator scores the compiled prompt on dev.

The task becomes a signature (``inputs -> answer``, the seed instruction) and a ``dspy.Predict`` student; train and
dev become ``dspy.Example``\\ s; the task's parser and metric become the DSPy metric
(:mod:`promptopt.core.dspy_interop`). ``teleprompter`` picks DSPy's optimizer (presets ``dspy-labeled`` …
``dspy-gepa``):

- ``labeled`` — ``LabeledFewShot``: ``demos`` train examples (a seeded draw; no model calls);
- ``bootstrap`` — ``BootstrapFewShot``: the student answers train examples; those the metric passes become demos
  (up to ``bootstrapped_demos``, plus labeled ones up to ``demos``);
- ``mipro`` — ``MIPROv2``: bootstrapped demo sets and proposed instructions, searched by Optuna TPE on dev
  (``candidates`` instructions and demo sets, ``trials`` trials; ``auto`` for DSPy's presets);
- ``copro`` — ``COPRO``: ``candidates`` instructions per round for ``depth`` rounds, scored on train;
- ``gepa`` — ``GEPA``: reflective instruction evolution on dev within ``metric_calls`` metric calls (where the
  installed DSPy has it).

DSPy calls the task model through the run's task client and proposes instructions (MIPROv2, COPRO, GEPA's
reflection) through its proposer client (:func:`promptopt.models.dspy_lm.dspy_lm`): one cache, one budget, role
``task`` or ``proposer``. The calls to score the compiled prompt on dev are reserved: DSPy stops when only they are
left. The compiled program comes back as a :class:`~promptopt.core.candidate.Prompt` (instruction + demos in the
task's template; demos as chat turns with the instruction in the system message, ``demo_format: turns_system``, as
DSPy's ChatAdapter shows them) and is scored by ``ctx.evaluate`` like every candidate; its held-out test score comes
from the runner. A stop inside DSPy (budget, a callback) ends the run with the best so far (the seed prompt); an error
inside DSPy's compile (MIPROv2 raises ``AdapterParseError`` when no proposal parses) ends the optimizer with a note.
Outputs DSPy cannot parse (small models rarely write its ``[[ ## field ## ]]`` markers) score 0 inside DSPy; they are
counted and reported in the result's notes; DSPy's own logs and prints go to ``dspy.log`` in the run directory.
Runs with ``num_threads=1`` and DSPy's cache off; seeded by the run seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from promptopt.core.candidate import DemoFormat
from promptopt.core.dspy_interop import dspy_metric, from_dspy
from promptopt.core.dspy_values import dspy_module, input_names, to_dspy_example
from promptopt.core.exceptions import BudgetExhausted, ConfigError
from promptopt.models.dspy_lm import EngineStopped, dspy_lm
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.run.context import RunContext

if TYPE_CHECKING:
    from promptopt.core.task import Task

Teleprompter = Literal["labeled", "bootstrap", "mipro", "copro", "gepa"]
NO_LIMIT = 10**9
"""DSPy's ``max_errors``: a failed parse scores 0 and never ends the compile (DSPy's default stops at 10)."""


@dataclass(frozen=True, kw_only=True)
class DSPyConfig(OptimizerConfig):
    teleprompter: Teleprompter = field(default="labeled", metadata={"help": "labeled, bootstrap, mipro, copro, gepa"})
    demos: int = field(default=4, metadata={"min": 0, "help": "labeled demos (LabeledFewShot k, max_labeled_demos)"})
    bootstrapped_demos: int = field(default=4, metadata={"min": 0, "help": "max_bootstrapped_demos"})
    max_rounds: int = field(default=1, metadata={"min": 1, "help": "BootstrapFewShot rounds"})
    candidates: int = field(default=4, metadata={"min": 2, "help": "MIPROv2 num_candidates, COPRO breadth"})
    trials: int = field(default=6, metadata={"min": 1, "help": "MIPROv2 num_trials (auto off)"})
    minibatch_size: int = field(default=0, metadata={"min": 0, "help": "MIPROv2 minibatch on dev (0: full dev)"})
    depth: int = field(default=2, metadata={"min": 1, "help": "COPRO rounds"})
    auto: Literal["off", "light", "medium", "heavy"] = field(default="off", metadata={"help": "MIPROv2/GEPA auto"})
    metric_calls: int = field(default=60, metadata={"min": 1, "help": "GEPA max_metric_calls (auto off)"})
    answer_tokens: int = field(default=32, metadata={"min": 1, "help": "new tokens for DSPy's markers per answer"})
    proposer_tokens: int = field(default=160, metadata={"min": 1, "help": "new tokens per proposer call"})
    json_fallback: bool = field(
        default=True,
        metadata={"help": "DSPy's JSONAdapter retry after a failed ChatAdapter parse (a second call; off halves "
                  "the calls of a model that never writes the markers)"},
    )  # fmt: skip
    demo_format: DemoFormat = field(
        default="turns_system",
        metadata={"help": "how the compiled prompt shows its demos (DSPy's ChatAdapter: turns_system)"},
    )


@register_optimizer("dspy")
class DSPyOptimizer(Optimizer):
    """A DSPy teleprompter (LabeledFewShot, BootstrapFewShot, MIPROv2, COPRO, GEPA) on promptopt's models and budget."""

    Config = DSPyConfig
    config: DSPyConfig
    uses_proposer = True

    def min_calls(self, task: Task) -> int:
        """The compiled prompt's dev evaluation (reserved before DSPy starts)."""
        return len(task.dev)

    def run(self, ctx: RunContext) -> str | None:
        dspy, c, task = dspy_module(), self.config, ctx.task
        if c.teleprompter == "gepa" and not hasattr(dspy, "GEPA"):
            raise ConfigError(f"DSPy {dspy.__version__} has no GEPA; use another teleprompter.", field="teleprompter")
        ctx.stop_if_asked()
        seed_prompt = task.seed_prompt()
        inputs = input_names(seed_prompt.template, task.train[0])
        reserve = len(task.dev)

        def before_call() -> None:
            ctx.stop_if_asked()
            left = ctx.calls_left()
            if left is not None and left <= reserve:
                raise BudgetExhausted(f"the {left} calls left are kept to score DSPy's program on dev")

        task_lm = dspy_lm(
            ctx.evaluator.client, max_tokens=task.generation.max_tokens + c.answer_tokens, before_call=before_call
        )
        prompt_lm = dspy_lm(ctx.proposer, max_tokens=c.proposer_tokens, before_call=before_call)
        train = list(task.train)
        random.Random(f"{ctx.seed}:dspy").shuffle(train)
        trainset = [to_dspy_example(ex, inputs) for ex in train]
        valset = [to_dspy_example(ex, inputs) for ex in task.dev]
        parses = parse_counter(dspy)
        log = ctx.artifacts / "dspy.log" if ctx.artifacts is not None else None
        adapter = dspy.ChatAdapter(use_json_adapter_fallback=c.json_fallback)
        self.notes = ()
        try:
            with (
                dspy_output(log),
                dspy.context(lm=task_lm, adapter=adapter, callbacks=[parses], num_threads=1, max_errors=NO_LIMIT),
            ):
                student = seed_prompt.to_dspy(task)
                program = self._compile(
                    dspy, student, trainset, valset, dspy_metric(task), task_lm, prompt_lm, ctx.seed
                )
        except EngineStopped as stop:
            self.notes = (f"dspy {c.teleprompter}: DSPy's compile stopped: {stop.cause}", *parses.notes())
            raise stop.cause from None  # the runner ends the run with the best so far
        except Exception as exc:  # DSPy's own errors (e.g. MIPROv2: no instruction proposal parsed) end the search
            why = f"dspy {c.teleprompter}: DSPy's compile failed ({type(exc).__name__}: {str(exc)[:300]})"
            self.notes = (why, *parses.notes())
            return why
        self.notes = parses.notes()
        prompt = from_dspy(
            program, seed_prompt, inputs=inputs, origin=f"dspy-{c.teleprompter}", parse_failures=parses.failed
        )
        if prompt.demos:  # shown as DSPy shows them; without demos the prompt stays in the task's own form
            prompt = dataclasses.replace(prompt, demo_format=c.demo_format)
        ctx.evaluate(prompt)
        return None

    def _compile(
        self, dspy: Any, student: Any, trainset: list[Any], valset: list[Any], metric: Any, task_lm: Any,
        prompt_lm: Any, seed: int,
    ) -> Any:  # fmt: skip
        c = self.config
        bootstrap = {"max_bootstrapped_demos": c.bootstrapped_demos, "max_labeled_demos": c.demos}
        if c.teleprompter == "labeled":  # the shuffled train split's first k: a draw seeded by the run seed
            return dspy.LabeledFewShot(k=c.demos).compile(student, trainset=trainset, sample=False)
        if c.teleprompter == "bootstrap":
            teleprompter = dspy.BootstrapFewShot(
                metric=metric, max_rounds=c.max_rounds, max_errors=NO_LIMIT, **bootstrap
            )
            return teleprompter.compile(student, trainset=trainset)
        if c.teleprompter == "mipro":
            auto = None if c.auto == "off" else c.auto
            mipro = dspy.MIPROv2(
                metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=auto, num_threads=1, seed=seed,
                num_candidates=None if auto else c.candidates, max_errors=NO_LIMIT, verbose=False, **bootstrap,
            )  # fmt: skip
            minibatch = 0 < c.minibatch_size < len(valset)
            return mipro.compile(
                student, trainset=trainset, valset=valset, num_trials=None if auto else c.trials, seed=seed,
                minibatch=minibatch, minibatch_size=c.minibatch_size if minibatch else 35,
                requires_permission_to_run=False,
            )  # fmt: skip
        if c.teleprompter == "copro":
            copro = dspy.COPRO(prompt_model=prompt_lm, metric=metric, breadth=c.candidates, depth=c.depth)
            return copro.compile(student, trainset=trainset, eval_kwargs={"num_threads": 1, "display_progress": False})
        budget = {"auto": c.auto} if c.auto != "off" else {"max_metric_calls": c.metric_calls}
        gepa = dspy.GEPA(metric=metric, reflection_lm=prompt_lm, num_threads=1, seed=seed, **budget)
        return gepa.compile(student, trainset=trainset, valset=valset)


@contextlib.contextmanager
def dspy_output(path: Path | None) -> Iterator[None]:
    """DSPy's logs (an ERROR line per failed parse) and prints go to ``path`` (``dspy.log`` in the run directory;
    nowhere without one) while DSPy compiles: the result's notes count the parse failures instead. (DSPy's tqdm bars
    on stderr stay: the run's own progress bars are drawn there too.)"""
    logger = logging.getLogger("dspy")
    saved = logger.level, logger.propagate, list(logger.handlers)
    with open(path, "a", encoding="utf-8") if path is not None else io.StringIO() as sink:
        logger.handlers, logger.propagate = [logging.StreamHandler(sink)], False
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(sink):  # not stderr: the run's progress bars are drawn there
                yield
        finally:
            logger.setLevel(saved[0])
            logger.propagate, logger.handlers = saved[1], saved[2]


def parse_counter(dspy: Any) -> Any:
    """A DSPy callback that counts adapter parses and failures per adapter (ChatAdapter, JSONAdapter)."""

    class ParseCounter(dspy.utils.callback.BaseCallback):
        def __init__(self) -> None:
            self.adapters: dict[str, str] = {}
            self.counts: Counter[tuple[str, bool]] = Counter()

        def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.adapters[call_id] = type(instance).__name__

        def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            self.counts[self.adapters.pop(call_id, "?"), exception is None] += 1

        @property
        def failed(self) -> int:
            return sum(n for (_, ok), n in self.counts.items() if not ok)

        def notes(self) -> tuple[str, ...]:
            if not self.failed:
                return ()
            per = ", ".join(
                f"{a} {self.counts[a, False]}/{self.counts[a, False] + self.counts[a, True]}"
                for a in sorted({a for a, _ in self.counts})
            )
            return (
                f"dspy: {self.failed} of DSPy's output parses failed ({per}): the model did not write DSPy's field "
                "markers; inside DSPy such an output scores 0 (the compiled prompt is scored by promptopt's evaluator)",
            )

    return ParseCounter()
