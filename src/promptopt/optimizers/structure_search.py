"""``structure_search``: Optuna TPE over the structure of a prompt (the MIPRO idea on promptopt's loop).

Search space (one categorical parameter each, conditional where it only matters for demos):

- ``instruction`` — the seed instruction, the configured ``instructions`` and up to ``n_instructions`` induced
  by the proposer from train demos (APE's meta-prompt), kept only if they pass the meta family's screening
  (:func:`~promptopt.optimizers.screening.screen_proposals`: no chatter, no copied input or meta-prompt line, at most
  ``max_words``; rejections are counted in the result);
- ``shots`` (0 = zero-shot), ``demo_seed`` (which random draw of demos), ``demo_format`` (inline or chat turns,
  :attr:`~promptopt.core.candidate.Prompt.demo_format`) and for In-Context Sampling ``k``, ``strategy`` and
  ``aggregation`` (:mod:`promptopt.prompts.ics`);
- ``format`` — one of ``n_formats`` FormatSpread formats (:mod:`promptopt.prompts.formats`; 0 = as written).

A new study first runs the plain points, queued ahead of TPE's own trials (they count towards
``n_startup_trials``): the seed instruction as written, zero-shot and with k demos (the largest configured
``shots`` up to 4; ICS K = 1) in every ``demo_formats``. Each
trial is one ``study.ask()`` → a candidate scored on a dev minibatch drawn for that trial number →
``study.tell()``; the runner does the evaluating, so budget, cache and history stay promptopt's. A trial whose
candidate is already scored on full dev (the seed's own point) is told its minibatch score from that record
without a model call. With ``robust`` = ``mean``/``worst`` a trial's value is the mean/minimum over
``n_robust_formats`` formats instead (and ``format`` is not searched) — or, with ``robust_over: paraphrases``, over
rule-based paraphrases of the candidate's instruction (:mod:`promptopt.prompts.paraphrase`).

Confirmation on full dev: every ``full_eval_every`` trials the leader (best mean trial value, not yet scored on
full dev), and at the end the ``n_confirm`` best such candidates. Under a call limit the search plans
(:mod:`promptopt.optimizers.planning`): a trial is asked only if its cheapest case plus confirming the
``n_confirm`` leaders afterwards (the current ones, or the new candidate with the best others) still fits, and
run only if its exact cost (known once its parameters are suggested: ICS K sub-prompts per example) does. A
queued trial that does not fit is failed and queued again for another run, which ends this one; a TPE trial
that does not fit is failed and another asked, up to ``MAX_MISSES`` times. So a run never ends on a budget
with its leaders unconfirmed; :meth:`StructureSearchOptimizer.min_calls` is one plain trial and its
confirmation, and the induction only spends what is left above that (so a tight first run leaves the study
fewer instructions).

Persistence: the study lives in Optuna storage — ``storage`` (any Optuna RDB URL, e.g. PostgreSQL for
several machines), by default ``sqlite:///<run_dir>/optuna.sqlite``, in memory without a run directory.
The search space (instruction texts, induced by the first process to propose) and the creating run's settings
are stored in the study, so workers (``promptopt worker --storage URL --study NAME``, each its own promptopt run)
and resumed runs share it; ``n_trials`` counts trials of the whole study, and ``promptopt worker --finalize``
merges every worker's trials into one leaderboard and result (:mod:`promptopt.cli.study_result`). With
``storage`` set, each trial beats every ``heartbeat`` seconds (:mod:`promptopt.optimizers.structure_study`): a
worker that dies (or stops mid-trial on its own budget) leaves a trial that the next worker asking fails after
three missed beats and queues again, up to ``max_retry`` times; a worker that finds the study full waits while
other workers' trials run, so such a retry is never left behind. A resumed run (same run directory = same
``worker``) also fails its own trials left RUNNING by the crash and re-queues their parameters; finished trials
are never asked again, and leaders it had scored on full dev are re-scored from the response cache. The runner
picks the best prompt among this worker's full-dev evaluations. Share the response cache as well
(``cache="postgresql://…"``, :class:`~promptopt.models.cache.PostgresResponseCache`) so that no worker pays a
request another made.

Only ``structure_search`` runs as a shared study. The meta-prompt family (APE, OPRO, PE2, APO, …) and the ICS
search are sequential: each step's proposals are written from the scores of the step before (a beam, a
trajectory, critiques), so there is no independent trial for another worker to take without changing the
algorithm; their parallelism is the batch of evaluations within a step (``batch_size``, several endpoints),
and several runs of them share one PostgreSQL response cache. ICS settings (K, strategy, aggregation) are
searched here, as trials of the shared study.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptopt.core._imports import require
from promptopt.core.candidate import Prompt
from promptopt.core.messages import Message
from promptopt.optimizers.base import register_optimizer
from promptopt.optimizers.beam import score_on
from promptopt.optimizers.ics import TupleSettingsMixin
from promptopt.optimizers.induction import induce, induction_prompts
from promptopt.optimizers.planning import affordable, eval_cost, subprompts
from promptopt.optimizers.proposer import Proposer
from promptopt.optimizers.screening import screen_proposals
from promptopt.optimizers.structure_space import StructureSearchConfig
from promptopt.optimizers.structure_study import RUN_CONFIG, ask, beating, fail_stale, make_space, open_storage
from promptopt.prompts.formats import robust_score
from promptopt.prompts.paraphrase import robust_variants
from promptopt.run.context import EvalRequest, RunContext
from promptopt.run.rundir import CONFIG_FILE, read_run_config

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.run.history import TrialRecord

MAX_MISSES = 3
"""TPE trials a run may fail for not fitting the budget before it stops asking (cheaper points may still fit)."""
logger = logging.getLogger(__name__)


@register_optimizer("structure_search")
class StructureSearchOptimizer(TupleSettingsMixin):
    """Optuna TPE over instruction × demos × format (× ICS K/strategy), minibatch trials, resumable storage."""

    Config = StructureSearchConfig
    config: StructureSearchConfig
    uses_proposer = True
    pending: list[Prompt]
    """Full-dev evaluations to run next (the periodic leader, the final confirmations, a resumed run's)."""
    closing: bool
    """No more trials: the final confirmations are pending or done."""

    def min_calls(self, task: Task) -> int:
        """One plain trial and its confirmation on full dev; with ``robust``, also the seed's own point (scored
        over formats, so not free)."""
        c = self.config
        k = c.plain_k if c.plain_shots is not None else 1
        trial = min(c.minibatch_size, len(task.dev)) * c.variants
        seed_point = trial if c.robust != "none" and 0 in c.shots else 0
        return seed_point + (trial + len(task.dev)) * k

    def run(self, ctx: RunContext) -> str | None:
        self.ctx = ctx
        self._open_study()
        self._induce()
        while True:
            if self.pending:  # full-dev confirmations first
                items, self.pending = self.pending, []
                for record in ctx.evaluate_all(items):
                    self._observe_full(record)
                continue
            if self.closing:
                return self.stop_reason
            ctx.stop_if_asked()  # asking writes a trial to the study
            trial = self._ask()
            if trial is None:
                continue
            with beating(self.storage, trial, self.beat):  # other workers retry it if this one dies
                started = self._start(trial)
                if started is not None:
                    prompt_id, requests = started
                    self._tell(trial, prompt_id, ctx.evaluate_all(requests))

    # -- the study --------------------------------------------------------------------------------
    def _open_study(self) -> None:
        ctx, c = self.ctx, self.config
        optuna = require("optuna", extra="optuna", feature="the structure_search optimizer")
        self.optuna = optuna
        here = str(ctx.artifacts.resolve()) if ctx.artifacts else f"pid{os.getpid()}-{uuid.uuid4()}"
        self.worker = c.worker or here
        url = c.storage or (f"sqlite:///{ctx.artifacts.resolve() / 'optuna.sqlite'}" if ctx.artifacts else None)
        self.beat = c.heartbeat if c.storage else 0  # a study of its own run directory has one worker
        self.storage = open_storage(url, heartbeat=self.beat, max_retry=c.max_retry)
        sampler = optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=c.n_startup_trials)
        self.study = optuna.create_study(
            study_name=c.study_name or f"promptopt-{ctx.task.name}-seed{ctx.seed}",
            storage=self.storage,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )
        if ctx.artifacts and (ctx.artifacts / CONFIG_FILE).is_file() and RUN_CONFIG not in self.study.user_attrs:
            self.study.set_user_attr(RUN_CONFIG, read_run_config(ctx.artifacts))  # for `promptopt worker`
        stored = self.study.user_attrs.get("instructions")
        self.induced = stored is not None
        instructions = list(stored) if stored is not None else []
        self.space = make_space(c, ctx.task, ctx.seed, instructions, ctx.evaluator.resolved_mode)
        self.values: dict[str, list[float]] = {}  # candidate id -> its trial values
        self.scored: dict[str, set[str]] = {}  # candidate id -> dev examples this run requested for it
        self.prompts: dict[str, Prompt] = {}
        self.full_done: set[str] = {ctx.task.seed_prompt().id}  # the runner scored the seed on dev already
        self.pending = []
        self.closing = False
        self.stop_reason: str | None = None
        self.told = 0
        self.misses = 0  # TPE trials this run could not pay for
        self.queued = False  # whether the trial asked last came from the queue (fixed parameters)
        if not self.study.get_trials(deepcopy=False):
            for point in self.space.plain_points():
                self.study.enqueue_trial(point, skip_if_exists=True)
        self._recover()

    def _induce(self) -> None:
        """Instruction candidates, shared through the study (the first process to propose writes them); induced
        ones are screened, and only as many are asked for as the budget pays above :meth:`min_calls`."""
        if self.induced:
            return
        self.induced = True
        stored = self.study.user_attrs.get("instructions")  # another worker may have written them meanwhile
        if stored is not None:
            self.space.instructions = list(stored)
            return
        task, c = self.ctx.task, self.config
        out = list(dict.fromkeys([task.instruction, *c.instructions]))
        metas = induction_prompts(task.train, c.n_instructions, n_demos=5, rng=self.ctx.rng)
        metas = affordable(metas, self._calls_left(), lambda _: 1, lambda _: self.min_calls(task))
        if len(metas) < c.n_instructions:
            logger.info("structure_search: the call budget pays for %d of %d inductions", len(metas), c.n_instructions)
        if metas:
            proposer = Proposer(
                self.ctx.proposer,
                temperature=c.temperature,
                max_tokens=c.max_tokens,
                before_call=self.ctx.stop_if_asked,
            )
            kids = screen_proposals(
                induce(proposer, metas),
                task.seed_prompt(),
                self.ctx.state,
                origin="structure_search",
                seen=set(out),
                max_words=c.max_words,
                forbidden={str(v) for ex in (*task.train, *task.dev) for v in ex.inputs.values()},
                meta_prompts=[(Message("user", m),) for m in metas],
            )
            out += [kid.instruction for kid in kids]
        self.study.set_user_attr("instructions", out)
        self.space.instructions = out

    # -- resume -----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Continue the study: learn from finished trials, retry this worker's interrupted ones."""
        states = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False):
            if t.state == states.COMPLETE:
                pid = self._remember(t.params)
                self.values.setdefault(pid, []).append(float(t.value))
            elif t.state == states.RUNNING and t.user_attrs.get("worker") == self.worker:
                self.storage.set_trial_state_values(t._trial_id, state=states.FAIL)
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
                logger.info("structure_search: trial %d was interrupted; its parameters are queued again", t.number)
        for params in self.study.user_attrs.get(f"full:{self.worker}", []):
            self.pending.append(self.prompts[self._remember(params)])

    def _remember(self, params: dict[str, Any]) -> str:
        prompt = self.space.build(dict(params))
        self.prompts.setdefault(prompt.id, prompt)
        return prompt.id

    def _n_taken(self) -> int:
        states = self.optuna.trial.TrialState
        return len(self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.RUNNING, states.WAITING)))

    def _ranked(self) -> list[Prompt]:
        """Candidates not yet scored on full dev, best mean trial value first (ties: more trials, then earlier)."""
        todo = [pid for pid in self.values if pid not in self.full_done]
        todo.sort(key=lambda pid: (sum(self.values[pid]) / len(self.values[pid]), len(self.values[pid])), reverse=True)
        return [self.prompts[pid] for pid in todo]

    # -- budget planning --------------------------------------------------------------------------
    def _calls_left(self) -> int | None:
        """Planned calls left (:meth:`RunContext.calls_left`), capped by the calls the budget still pays: a
        resumed run does not replay its finished trials, so it has planned less than it paid."""
        left = self.ctx.calls_left()
        tracker = self.ctx.budget
        if left is None or tracker.budget.max_calls is None:
            return left
        return min(left, tracker.budget.max_calls - tracker.limited().calls)

    def _fits(self, cost: int, ranked: Sequence[Prompt], new: int | None = None) -> bool:
        """Whether ``cost`` more calls still leave enough to confirm the leaders on full dev afterwards.

        ``ranked``: the unconfirmed candidates whose scores stay as they are, best first; ``new``: the full-dev
        cost of the candidate the spending scores (None: none), which may join the ``n_confirm`` leaders — the
        reserve is the dearer of the current leaders and the new one with the ``n_confirm - 1`` best others.
        """
        left = self._calls_left()
        if left is None:
            return True
        n = self.config.n_confirm

        def confirm(prompts: Sequence[Prompt]) -> int:
            return sum(self._confirm_cost(p) for p in prompts)

        reserve = confirm(ranked[:n])
        if new is not None:
            reserve = max(reserve, new + confirm(ranked[: n - 1]))
        return cost + reserve <= left

    def _confirm_cost(self, prompt: Prompt, seen: set[str] | frozenset[str] = frozenset()) -> int:
        """Planned calls to score ``prompt`` on full dev: the dev examples this run has not yet requested for it
        (nor ``seen``) — the others are cache hits (:meth:`RunContext.confirmation_cost`)."""
        return self.ctx.confirmation_cost(len(self.scored.get(prompt.id, set()) | seen), subprompts(prompt))

    def _cheapest_confirmation(self) -> int:
        """A new candidate's smallest full-dev cost: ICS K = 1, its trial's minibatch already requested."""
        c = self.config
        return self.ctx.confirmation_cost(min(c.minibatch_size, len(self.ctx.task.dev)) if c.robust == "none" else 0)

    def _cheapest_trial(self) -> int:
        """A trial's smallest cost: its minibatch, once per scored variant (ICS K = 1)."""
        c = self.config
        return min(c.minibatch_size, len(self.ctx.task.dev)) * c.variants

    def _close(self, *, over_budget: bool) -> None:
        """No more trials: queue the final confirmations (the ``n_confirm`` leaders, as far as the budget pays)."""
        self.closing = True
        leaders = self._ranked()[: self.config.n_confirm]
        self.pending = affordable(leaders, self._calls_left(), self._confirm_cost, lambda _: 0)
        if over_budget:
            self.stop_reason = "the call budget left paid only for confirming the leaders on full dev"
            logger.info("structure_search: %s (%d)", self.stop_reason, len(self.pending))

    # -- one trial ------------------------------------------------------------------------------------
    def _ask(self) -> Any | None:
        """The next trial, or None (after :meth:`_close`) when the study is done or the budget cannot pay one."""
        fail_stale(self.study)  # a dead worker's trial: failed, and queued again
        waiting = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.WAITING,))
        if not waiting and self._n_taken() >= self.config.n_trials:
            if self.beat and self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
                time.sleep(self.beat)  # another worker's trial: done soon, or its worker died and it is retried
                return None
            self._close(over_budget=False)
            return None
        # a trial's exact cost is known once its parameters are suggested, and checked then (_requests)
        if not waiting and not self._fits(self._cheapest_trial(), self._ranked(), self._cheapest_confirmation()):
            self._close(over_budget=True)
            return None
        trial = ask(self.study)  # a queued trial first, if any
        trial.set_user_attr("worker", self.worker)
        self.queued = bool(waiting)
        return trial

    def _start(self, trial: Any) -> tuple[str, list[EvalRequest]] | None:
        """The trial's candidate and minibatch evaluations; None when it was told without any (or handed back:
        over budget)."""
        params = self.space.suggest(trial)
        prompt = self.space.build(params)
        self.prompts.setdefault(prompt.id, prompt)
        batch = self.space.minibatch(trial.number)
        done = self.ctx.history.find(prompt.id)
        if self.config.robust == "none" and done is not None and (value := score_on(done, batch)) is not None:
            self.study.tell(trial, value)  # scored on full dev already: its minibatch score is known
            self._learn(prompt.id, value)
            return None
        variants = (
            robust_variants(
                prompt, self.ctx.task, self.config.n_robust_formats, seed=self.ctx.seed, over=self.config.robust_over
            )
            if self.config.robust != "none"
            else [prompt]
        )
        others = [p for p in self._ranked() if p.id != prompt.id]
        seen = {ex.id for ex in batch} if self.config.robust == "none" else set()
        new = None if prompt.id in self.full_done else self._confirm_cost(prompt, seen)
        if not self._fits(sum(eval_cost(v, len(batch)) for v in variants), others, new):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            if self.queued or self.misses >= MAX_MISSES:
                self.study.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
                self._close(over_budget=True)
            else:  # TPE may suggest a cheaper point (fewer ICS sub-prompts) that still fits
                self.misses += 1
            return None
        self.scored.setdefault(prompt.id, set()).update(seen)
        return prompt.id, [EvalRequest(v, batch) for v in variants]

    def _tell(self, trial: Any, pid: str, records: Sequence[TrialRecord]) -> None:
        """Tell the study a trial's value: the robust objective over its variants' minibatch means."""
        if any(r.status != "complete" for r in records):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        value = robust_score([r.mean for r in records], self.config.robust)
        self.study.tell(trial, value)
        self._learn(pid, value)

    def _learn(self, pid: str, value: float) -> None:
        """Record a told trial; every ``full_eval_every`` trials queue the leader for full dev if that fits."""
        self.values.setdefault(pid, []).append(value)
        self.told += 1
        if self.told % self.config.full_eval_every:
            return
        ranked = self._ranked()
        if ranked and self._fits(self._confirm_cost(ranked[0]), ranked[1:]):
            self.pending.append(ranked[0])

    def _observe_full(self, record: TrialRecord) -> None:
        pid = record.prompt.id
        self.full_done.add(pid)
        params = self.prompts[pid].meta.get("params") if pid in self.prompts else None
        if params is not None:
            key = f"full:{self.worker}"
            done = list(self.study.user_attrs.get(key, []))
            if dict(params) not in done:
                self.study.set_user_attr(key, [*done, dict(params)])
