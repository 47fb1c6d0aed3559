"""``feedback``: prompt refinement as a closed control loop with a P, PI or PID controller (after Karn 2025,
"Linear Feedback Control Systems for Iterative Prompt Optimization in Large Language Models").

The paper gives the framing only (no code), so every mapping below is this module's own choice.

**Plant and measurement.** The plant is the *current prompt*. Each controller tick measures its output
``y_t``: the mean score on the **full dev split** (the same examples every tick, so ``Δe`` is a change of
the prompt, not of the sample; every measured prompt is also a full-dev candidate the runner can return).
The error is ``e_t = setpoint - y_t``, and the dev examples the prompt gets wrong are the failures.

**Controller.** :class:`promptopt.optimizers.control.PID` with ``dt = 1`` per tick: ``u_t = Kp·e_t + Ki·Σe + Kd·D_t``,
the integral clamped to ``|Ki·Σe| <= integral_limit`` and not advanced while ``u`` is above 1 (both
anti-windup), ``D_t`` the error difference through a first-order low-pass (``derivative_filter``), 0 on
the first tick.
``controller: p`` zeroes Ki and Kd, ``pi`` zeroes Kd, whatever the gains say.

**Magnitude mapping (u → size of the next correction).** ``μ = clip(u, 0, 1)`` (u is in score units,
so ``u = 1`` asks for the largest correction), then, all monotone in ``μ``:

- ``max_words = round(μ · max_edit_words)``: the word-level edit distance the rewrite may have from the
  current instruction. Longer edits are rejected (``step_size``). ``max_words = 0`` is a *hold*: a
  correction under half a word is no correction (a deadband, as in an actuator with static friction).
- ``n_failures = min_failures + round(μ · (max_failures - min_failures))`` failures shown to the corrector.
- ``temperature = min_temperature + μ · (max_temperature - min_temperature)`` for the corrector.

**Direction.** The corrector (the proposer model) critiques the shown failures (``critique: true``:
one call) and writes ``n_samples`` rewrites told to change at most ``max_words`` words. Among the valid
ones (extractable by :func:`~promptopt.optimizers.screening.extract_instruction` once announce-only lead-ins
such as "Here's the new instruction:" are dropped, not yet evaluated, within the step size) the largest
edit wins: it best delivers the magnitude asked for (ties: the first sample). A rewrite that repeats a
prompt already evaluated is rejected (``duplicate``). If none is valid the tick is a hold and the next
tick asks again.

**Acceptance.** ``accept: always`` (default, the paper's loop) applies every correction: the new prompt
becomes the plant even if it scores worse, and the controller reacts to the larger error.
``accept: improve`` keeps the correction only if it scores higher than the plant (a hill-climber);
otherwise the plant stays and the tick counts as a hold. The runner's best prompt is the best full-dev
score in either case.

**Holds.** A hold tick (deadband, no valid rewrite, or a rejected correction) advances the controller with
the unchanged error: P stays put, the integral grows. That is how PI escapes the deadband where P stays
with a steady-state error of up to ``1 / (2·Kp·max_edit_words)``.

**Stopping.** ``e_t <= tolerance`` (the setpoint is reached, or passed: a score above the target is never
a reason to keep editing); *oscillation*: the plant's last ``window`` score changes flip sign at least
``oscillation_changes`` times; *settled*: its last ``window + 1`` scores lie within ``tolerance`` of each
other (a steady state away from the setpoint, e.g. a limit cycle between prompts that score alike);
``patience`` consecutive hold ticks; or the budget. With ``setpoint = 1`` the error is never negative, so
the integral never unwinds: ``integral_limit`` is what bounds it. A setpoint far out of reach saturates
``u`` for P, PI and PID alike, and they then behave the same (maximal steps).

**Trajectory.** Every tick (error, P/I/D terms, u, the mapped magnitude, action, edit size) is stored in
the ``meta["feedback"]["ticks"]`` of the candidate it produced (holds go to the next candidate), so it
lands in history.jsonl. The complete list, with trailing holds and the final tick, is also written to
``<run_dir>/feedback_trajectory.json``. :mod:`promptopt.optimizers.feedback_trajectory` rebuilds it, with
step-response metrics (``read_trajectory``), and draws it (``plot_trajectory``).

**Determinism.** Failures are sampled with ``ctx.rng``, and corrector samples get the proposer's running
sample index, so a rerun with the same seed replays from the response cache.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.control import PID, ControlStep, is_oscillating
from promptopt.optimizers.feedback_trajectory import TRAJECTORY_FILE
from promptopt.optimizers.proposer import Proposer, render_meta_prompt, sample_failures
from promptopt.optimizers.screening import Screened, screen_reply

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.run.context import RunContext
    from promptopt.run.history import TrialRecord

logger = logging.getLogger(__name__)

Controller = Literal["p", "pi", "pid"]
Accept = Literal["always", "improve"]


@dataclass(frozen=True, kw_only=True)
class FeedbackConfig(OptimizerConfig):
    controller: Controller = field(default="pid", metadata={"help": "p | pi | pid (unused gains are zeroed)"})
    kp: float = field(default=1.0, metadata={"min": 0.0, "help": "proportional gain"})
    ki: float = field(default=0.2, metadata={"min": 0.0, "help": "integral gain (pi, pid)"})
    kd: float = field(default=0.5, metadata={"min": 0.0, "help": "derivative gain (pid)"})
    setpoint: float = field(default=1.0, metadata={"help": "target dev score, in (0, 1]"})
    tolerance: float = field(default=0.02, metadata={"min": 0.0, "help": "stop when setpoint - score <= this"})
    integral_limit: float | None = field(
        default=0.3, metadata={"min": 0.0, "help": "anti-windup: bound on |Ki·Σe| (null: none)"}
    )
    derivative_filter: float = field(
        default=0.5, metadata={"min": 0.0, "help": "low-pass coefficient on Δe in [0, 1); 0 = raw"}
    )
    max_edit_words: int = field(default=40, metadata={"min": 1, "help": "words an edit may change at u >= 1"})
    min_failures: int = field(default=2, metadata={"min": 0, "help": "failures shown at u = 0"})
    max_failures: int = field(default=6, metadata={"min": 0, "help": "failures shown at u >= 1"})
    min_temperature: float = field(default=0.3, metadata={"min": 0.0, "help": "corrector temperature at u = 0"})
    max_temperature: float = field(default=1.0, metadata={"min": 0.0, "help": "corrector temperature at u >= 1"})
    accept: Accept = field(default="always", metadata={"help": "always (the paper's loop) | improve"})
    critique: bool = field(default=True, metadata={"help": "a critique call before the rewrites"})
    n_samples: int = field(default=3, metadata={"min": 1, "help": "rewrites sampled per corrector round"})
    patience: int = field(default=3, metadata={"min": 1, "help": "consecutive hold ticks before stopping"})
    window: int = field(
        default=6, metadata={"min": 0, "help": "last score changes checked for oscillation/settling (0: off)"}
    )
    oscillation_changes: int = field(default=4, metadata={"min": 1, "help": "sign flips that mean oscillation"})
    max_words: int = field(default=80, metadata={"min": 1, "help": "longer instructions are rejected"})
    max_tokens: int = field(default=128, metadata={"min": 1, "help": "corrector reply length"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.setpoint <= 1.0:
            raise ConfigError(f"must be in (0, 1] (a dev score), got {self.setpoint!r}", field="setpoint")
        if not self.derivative_filter < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.derivative_filter!r}", field="derivative_filter")
        if self.min_failures > self.max_failures:
            raise ConfigError(
                f"must be <= max_failures ({self.max_failures}), got {self.min_failures}", field="min_failures"
            )
        if self.min_temperature > self.max_temperature:
            raise ConfigError(
                f"must be <= max_temperature ({self.max_temperature}), got {self.min_temperature}",
                field="min_temperature",
            )

    @property
    def gains(self) -> tuple[float, float, float]:
        """(Kp, Ki, Kd) with the gains the controller type does not use set to 0."""
        return self.kp, self.ki if self.controller != "p" else 0.0, self.kd if self.controller == "pid" else 0.0


@dataclass(frozen=True)
class Magnitude:
    """The size of the next correction, mapped from the control output."""

    level: float
    """μ = clip(u, 0, 1)."""
    max_words: int
    n_failures: int
    temperature: float


def magnitude(u: float, config: FeedbackConfig) -> Magnitude:
    """Map the control output ``u`` to the correction's size (see the module docstring); monotone in ``u``."""
    mu = min(1.0, max(0.0, u))
    c = config
    return Magnitude(
        level=mu,
        max_words=round(mu * c.max_edit_words),
        n_failures=c.min_failures + round(mu * (c.max_failures - c.min_failures)),
        temperature=c.min_temperature + mu * (c.max_temperature - c.min_temperature),
    )


@dataclass(frozen=True)
class Tick:
    """One controller tick, as stored in the candidates' meta."""

    tick: int
    measurement: int
    """How many plant measurements the controller had seen (0 = the seed prompt's)."""
    plant: str
    score: float
    error: float
    p: float
    i: float
    d: float
    u: float
    level: float
    max_words: int
    n_failures: int
    temperature: float
    action: str = "open"
    """``edit`` (a correction was proposed), ``hold`` (none), ``stop`` or ``open`` (not acted on yet)."""
    reason: str | None = None
    """Why the tick was a hold (or the run stopped)."""
    note: str | None = None
    """Why the plant did not change before this tick (a rejected or failed correction)."""
    edit_words: int | None = None
    candidate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("score", "error", "p", "i", "d", "u", "level", "temperature"):
            d[k] = round(d[k], 6)
        return d


def strip_lead_in(text: str) -> str:
    """Drop leading paragraphs that only announce the answer ("Here's the revised instruction:")."""
    if re.search(r"<prompt>", text, re.IGNORECASE):
        return text
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    while len(paragraphs) > 1 and paragraphs[0].rstrip().endswith(":") and len(paragraphs[0].split()) <= 12:
        paragraphs.pop(0)
    return "\n\n".join(paragraphs)


@register_optimizer("feedback")
class FeedbackOptimizer(Optimizer):
    """Closed-loop prompt correction: a P/PI/PID controller sets how big each correction may be, a
    corrector model decides what to change (see the module docstring for every mapping choice)."""

    Config = FeedbackConfig
    config: FeedbackConfig
    uses_proposer = True

    def run(self, ctx: RunContext) -> str | None:
        """Measure the seed, then correct and measure, tick by tick, until a stopping rule (or the budget) ends it."""
        c = self.config
        self.ctx = ctx
        kp, ki, kd = c.gains
        self.pid = PID(
            kp, ki, kd, integral_limit=c.integral_limit, derivative_filter=c.derivative_filter, output_limits=(0.0, 1.0)
        )
        self.proposer = Proposer(
            ctx.proposer, temperature=c.min_temperature, max_tokens=c.max_tokens, before_call=ctx.stop_if_asked
        )
        self.dev = tuple(ctx.task.dev)
        self.plant: TrialRecord | None = None
        self.scores: list[float] = []
        """The plant's measured score, one entry per measurement."""
        self.ticks: list[Tick] = []
        self._pending: list[Tick] = []
        """Closed ticks not yet stored in a candidate's meta."""
        self._holds = 0
        self._stop: str | None = None
        try:
            # the plant's first output: the seed prompt's dev score (the first tick)
            self._measure(ctx.seed_record)
            self._save()
            while self._stop is None:
                # correct: a rewrite of the size the controller asks for (none that qualifies: a hold)
                candidate = self._correct(self.ticks[-1])
                if candidate is None:
                    self._hold("no valid rewrite within the step size")
                    continue
                self._save()
                # measure: the correction's full-dev score, then the next tick (or a stopping rule)
                self._apply(ctx.evaluate(candidate))
                self._save()
            return self._stop
        finally:
            self._save()

    def _apply(self, record: TrialRecord) -> None:
        """A correction was measured: the new plant output (``accept: always``, or it scored higher), else a hold."""
        assert self.plant is not None
        if record.status != "complete" or record.result is None:
            self._hold(f"the correction failed to evaluate ({record.error})", close=False)
        elif self.config.accept == "always" or record.mean > self.plant.mean:
            self._measure(record)
        else:
            self._hold(f"correction rejected: {record.mean:.3f} <= {self.plant.mean:.3f}", close=False)

    def _save(self) -> None:
        """Write every tick so far (including trailing holds and the last tick, which no candidate carries)
        to ``<run_dir>/feedback_trajectory.json``."""
        if self.ctx.artifacts is None:
            return
        c = self.config
        payload = {
            "controller": c.controller,
            "setpoint": c.setpoint,
            "accept": c.accept,
            "scores": self.scores,
            "stop": self._stop,
            "ticks": self.trajectory,
        }
        (self.ctx.artifacts / TRAJECTORY_FILE).write_text(json.dumps(payload, indent=1) + "\n")

    @property
    def trajectory(self) -> list[dict[str, Any]]:
        """Every tick so far, including holds and the last one (not yet acted on)."""
        return [t.to_dict() for t in self.ticks]

    # -- control ----------------------------------------------------------------------------------
    def _measure(self, record: TrialRecord) -> None:
        """A new plant output: update the controller and apply the stopping rules."""
        self.plant = record
        self.scores.append(record.mean)
        self._holds = 0
        tick = self._tick()
        c = self.config
        recent = self.scores[-(c.window + 1) :]
        if tick.error <= c.tolerance + 1e-9:
            self._finish(f"setpoint reached: error {tick.error:.3f} <= tolerance {c.tolerance}")
        elif c.window and is_oscillating(self.scores, window=c.window, min_changes=c.oscillation_changes):
            self._finish(
                f"oscillation: the score changed direction {c.oscillation_changes}+ times "
                f"in its last {c.window} changes"
            )
        elif c.window and len(recent) > c.window and max(recent) - min(recent) <= c.tolerance + 1e-9:
            self._finish(
                f"settled: the last {len(recent)} scores lie within {c.tolerance} (steady-state error {tick.error:.3f})"
            )
        else:
            self._deadband()

    def _tick(self, note: str | None = None) -> Tick:
        assert self.plant is not None
        error = self.config.setpoint - self.plant.mean
        step: ControlStep = self.pid.update(error)
        m = magnitude(step.u, self.config)
        tick = Tick(
            tick=len(self.ticks),
            measurement=len(self.scores) - 1,
            plant=self.plant.prompt.id,
            score=self.plant.mean,
            error=error,
            p=step.p,
            i=step.i,
            d=step.d,
            u=step.u,
            level=m.level,
            max_words=m.max_words,
            n_failures=m.n_failures,
            temperature=m.temperature,
            note=note,
        )
        self.ticks.append(tick)
        logger.debug("feedback tick %d: e=%.3f u=%.3f max_words=%d", tick.tick, error, step.u, m.max_words)
        return tick

    def _deadband(self) -> None:
        """Hold while the correction rounds to 0 words (P stays put; an integral grows out of it)."""
        while self._stop is None and self.ticks[-1].max_words == 0:
            self._hold("deadband: the correction rounds to 0 words")

    def _hold(self, reason: str, *, close: bool = True) -> None:
        """No correction this tick: close the open tick as a hold (unless it already carries a proposed
        edit) and advance the controller with the unchanged error."""
        if close:
            self._close(self.ticks[-1], action="hold", reason=reason)
        self._holds += 1
        if self._holds >= self.config.patience:
            self._finish(f"stalled: {self._holds} ticks without an applied correction (last: {reason})")
            return
        self._tick(note=None if close else reason)
        self._deadband()

    def _finish(self, reason: str) -> None:
        self._stop = reason
        last = self.ticks[-1]
        if last.action == "open":
            self.ticks[last.tick] = replace(last, action="stop", reason=reason)

    def _close(self, tick: Tick, **changes: Any) -> Tick:
        closed = replace(tick, **changes)
        self.ticks[tick.tick] = closed
        self._pending.append(closed)
        return closed

    # -- the corrector ----------------------------------------------------------------------------
    def _correct(self, tick: Tick) -> Prompt | None:
        """Ask the corrector for a rewrite within ``tick.max_words``; None if no sample qualifies."""
        assert self.plant is not None
        c, ctx = self.config, self.ctx
        plant = self.plant.prompt
        failures = [f.as_dict() for f in sample_failures(self.plant, self.dev, tick.n_failures, ctx.rng)]
        self.proposer.temperature = tick.temperature
        context = {
            "instruction": plant.instruction,
            "score": self.plant.mean,
            "setpoint": c.setpoint,
            "failures": failures,
        }
        critique = ""
        if c.critique:
            reply = self.proposer.ask([render_meta_prompt("feedback_critique", **context)])[0]
            critique = " ".join(reply.split()[:60])
        meta = render_meta_prompt("feedback_rewrite", **context, critique=critique, max_words=tick.max_words)
        texts = self.proposer.ask([meta] * c.n_samples)
        seen = {r.prompt.instruction for r in ctx.history}
        forbidden = [str(v) for ex in self.dev for v in ex.inputs.values()]
        best: Screened | None = None  # the largest edit within the step size (ties: the first sample)
        for text in texts:
            s = screen_reply(
                strip_lead_in(text),
                plant,
                seen=seen,
                max_words=c.max_words,
                forbidden=forbidden,
                strict=False,
                step_size=tick.max_words,
            )
            if s.instruction is None:
                ctx.reject(s.reason or "invalid")
            elif best is None or s.edit_words > best.edit_words:
                best = s
        if best is None or best.instruction is None:
            return None
        child = plant.with_instruction(best.instruction, origin=f"feedback:{c.controller}", step=ctx.next_step)
        self._close(tick, action="edit", edit_words=best.edit_words, candidate=child.id)
        ticks, self._pending = [t.to_dict() for t in self._pending], []
        fb = {"controller": c.controller, "setpoint": c.setpoint, "accept": c.accept, "ticks": ticks}
        return replace(child, meta={**child.meta, "feedback": fb})
