"""The optimizer contract: one conformance suite every registered optimizer passes, on the public API only.

A :class:`ContractCase` runs through :func:`promptopt.optimize` / :func:`promptopt.resume`; the :data:`CHECKS`
(``determinism``, ``budget``, ``resume``, ``history``, ``export``: see each ``check_*``) read what a user reads, the
:class:`~promptopt.run.result.OptimizationResult` and the run directory, and raise :class:`AssertionError` naming the
case and what differed. :mod:`promptopt.testing.contract_cases` gives each built-in a setting that runs in well under
a second on the toy task (``soft_prompt``: on a tiny random Llama). A third-party optimizer runs the same suite::

    case = ContractCase(optimizer="my_opt", model=testing.toy_model, proposer=contract_cases.toy_proposer,
                        task=make_toy_task())
    check_all(case, tmp_path)
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promptopt
from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import BudgetExhausted, ConfigError
from promptopt.core.task import Task
from promptopt.models.base import Model
from promptopt.models.budget import Budget
from promptopt.optimizers.base import Optimizer
from promptopt.run.callbacks import Callback, Event, TrialFinished
from promptopt.run.result import OptimizationResult

LIMITED_ROLES = ("task", "proposer", "train")
"""Roles the call budget limits; ``report`` (the held-out test evaluation) is outside it."""
ModelSpec = Model | Callable[[], Model]
"""A model, or a factory called once per run (for models that keep state)."""


@dataclass(frozen=True, kw_only=True)
class ContractCase:
    """How to run one optimizer for the contract. ``optimizer``: a registered name or preset (built with
    ``settings``) or an instance (each run gets a copy, ``settings`` set); ``task``: a file path (the resume check
    uses :func:`promptopt.resume`) or a :class:`Task` (``optimize(..., resume=True)``); ``budget_calls``: enough for
    a few trials; ``stop_after``: the trial after which the resume check stops the run (negative: from the end;
    None: half-way); ``label`` names the case in messages; ``requires``: modules it needs (``pytest.importorskip``)."""

    optimizer: str | Optimizer
    model: ModelSpec
    task: Task | str | Path
    proposer: ModelSpec | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    budget_calls: int = 200
    seed: int = 0
    stop_after: int | None = None
    label: str | None = None
    requires: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.label or (self.optimizer if isinstance(self.optimizer, str) else self.optimizer.name)

    def make_optimizer(self) -> Optimizer:
        """A fresh optimizer (they keep run state)."""
        if isinstance(self.optimizer, str):
            return promptopt.load_optimizer(self.optimizer, **self.settings)
        return type(self.optimizer)(dataclasses.replace(self.optimizer.config, **self.settings))

    def make_model(self) -> Model:
        return self.model if hasattr(self.model, "generate") else self.model()  # type: ignore[return-value]

    def make_proposer(self) -> Model | None:
        p = self.proposer
        return p if p is None or hasattr(p, "generate") else p()  # type: ignore[return-value]

    def load_task(self) -> Task:
        return self.task if isinstance(self.task, Task) else promptopt.load_task(self.task)


@dataclass(frozen=True)
class ContractRun:
    """A finished run of a case: its result, run directory and call budget."""

    result: OptimizationResult
    run_dir: Path
    budget_calls: int


def run_case(case: ContractCase, run_dir: Path, *, budget_calls: int | None = None, resume: bool = False,
             callbacks: Sequence[Callback] = (), model: Model | None = None,
             proposer: Model | None = None) -> ContractRun:  # fmt: skip
    """Run ``case`` into ``run_dir`` (cache: the file ``<run_dir>.sqlite``) with a fresh optimizer and models (or
    ``model``, ``proposer``); ``resume``: continue it (:func:`promptopt.resume` when the task is a file)."""
    calls = budget_calls if budget_calls is not None else case.budget_calls
    model = model if model is not None else case.make_model()
    proposer = proposer if proposer is not None else case.make_proposer()
    budget, cache = Budget(max_calls=calls), run_dir.with_name(run_dir.name + ".sqlite")
    if resume and not isinstance(case.task, Task):  # the saved settings name the models; these stand in for them
        result = promptopt.resume(run_dir, budget=budget, model=model, proposer=proposer or model, callbacks=callbacks)
    else:
        result = promptopt.optimize(
            case.task, case.make_optimizer(), model, proposer=proposer, budget=budget, seed=case.seed,
            run_dir=run_dir, cache=cache, callbacks=callbacks, resume=resume,
        )  # fmt: skip
    return ContractRun(result=result, run_dir=run_dir, budget_calls=calls)


def reference_run(case: ContractCase, workdir: Path) -> ContractRun:
    """The uninterrupted run the checks compare against (pass it to several checks to save time)."""
    return run_case(case, _fresh(workdir, "reference"))


def _fresh(workdir: Path, stem: str) -> Path:
    """A new, empty run directory under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=workdir))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/history.jsonl``; a line that is not a JSON object is an AssertionError naming it."""
    path, rows = run_dir / "history.jsonl", []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(None)
        assert isinstance(rows[-1], dict), f"{path}:{n}: not a JSON object: {line[:120]!r}"
    return rows


def history_essence(run_dir: Path) -> list[tuple[Any, ...]]:
    """Per trial of history.jsonl: number, prompt id, full-dev flag, status, per-example scores (no timings, spend)."""
    out = []
    for row in read_history(run_dir):
        scores = tuple((r["example_id"], r["score"]) for r in (row.get("result") or {}).get("records", ()))
        out.append((row.get("trial"), row.get("prompt", {}).get("id"), row.get("full"), row.get("status"), scores))
    return out


def usage_by_role(result: OptimizationResult, roles: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Calls, cache hits, errors and tokens per role (all roles, or ``roles``)."""
    keys = ("calls", "cache_hits", "errors", "tokens")
    by_role = sorted(result.usage.get("by_role", {}).items())
    return {role: {k: int(u.get(k, 0)) for k in keys} for role, u in by_role if roles is None or role in roles}


def calls_by_role(result: OptimizationResult, roles: Sequence[str] | None = None, key: str = "calls") -> dict[str, int]:
    """One usage figure (default: calls) per role."""
    return {role: u[key] for role, u in usage_by_role(result, roles).items()}


def _diff(a: Sequence[Any], b: Sequence[Any]) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return f"first difference at trial {i}: {a[i]!r} != {b[i]!r}" if i is not None else f"{len(a)} vs {len(b)} trials"


def check_determinism(case: ContractCase, workdir: Path, reference: ContractRun | None = None) -> None:
    """Two runs with the same seed and fresh caches: the same best prompt, history and usage."""
    a = reference or reference_run(case, workdir)
    b = run_case(case, _fresh(workdir, "again"))
    who = f"{case.name}: two runs with seed {case.seed} and fresh caches"
    best_a, best_b = a.result.best_prompt.id, b.result.best_prompt.id
    assert best_a == best_b, f"{who} chose different best prompts: {best_a} vs {best_b}"
    ha, hb = history_essence(a.run_dir), history_essence(b.run_dir)
    assert ha == hb, f"{who} have different histories (trial, prompt id, full, status, scores): {_diff(ha, hb)}"
    ua, ub = usage_by_role(a.result), usage_by_role(b.result)
    assert ua == ub, f"{who} spent differently: {ua} vs {ub}"


class CountingModel:
    """Forwards to ``inner`` (any attribute) and counts the requests it is sent."""

    def __init__(self, inner: Model) -> None:
        self.inner, self.calls = inner, 0

    def generate(self, requests: Sequence[Any], **kwargs: Any) -> Any:
        self.calls += len(requests)
        return self.inner.generate(requests, **kwargs)

    def score(self, requests: Sequence[Any], **kwargs: Any) -> Any:
        self.calls += len(requests)
        return self.inner.score(requests, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def _counted(model: Model | None) -> Any:
    """``model`` behind a counter, unless it trains in process (training needs the model itself)."""
    return model if model is None or model.capabilities.trainable else CountingModel(model)


def check_budget(case: ContractCase, workdir: Path, reference: ContractRun | None = None) -> None:
    """The search (task model, proposer, training) never spends more than ``Budget(max_calls=N)``, at the case's
    budget and at the tightest one the optimizer accepts (the seed on dev + ``min_calls``; none declared: half the
    case's budget); every model call is in the usage; a budget below that minimum is refused before any call."""
    task = case.load_task()
    need, n_dev = case.make_optimizer().min_calls(task), len(task.dev)
    tight = n_dev + need if need else max(n_dev, case.budget_calls // 2)
    model, proposer = _counted(case.make_model()), _counted(case.make_proposer())
    runs = [reference or reference_run(case, workdir)]
    runs.append(run_case(case, _fresh(workdir, "tight"), budget_calls=tight, model=model, proposer=proposer))
    for run in runs:
        limit, calls = run.budget_calls, calls_by_role(run.result)
        spent = sum(n for role, n in calls.items() if role in LIMITED_ROLES)
        assert spent <= limit, f"{case.name}: Budget(max_calls={limit}) exceeded: {spent} search calls {calls}"
    if isinstance(model, CountingModel) and (proposer is None or isinstance(proposer, CountingModel)):
        made = model.calls + (proposer.calls if proposer is not None else 0)  # no proposer: the model proposes
        charged = sum(n for role, n in calls.items() if role != "train")
        assert made == charged, f"{case.name}: the models got {made} requests, the usage charges {calls}"
    if not need:
        return  # no declared minimum: nothing to refuse up front
    too_small = n_dev + need - 1
    what = f"{case.name}: Budget(max_calls={too_small}), below the seed on dev ({n_dev}) + min_calls ({need}),"
    model, proposer = CountingModel(case.make_model()), _counted(case.make_proposer())
    try:
        promptopt.optimize(task, case.make_optimizer(), model, proposer=proposer, budget=Budget(max_calls=too_small),
                           seed=case.seed, cache=False, evaluate_test=False)  # fmt: skip
    except (ConfigError, BudgetExhausted):
        pass
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__} ({exc}), not a ConfigError/BudgetExhausted") from exc
    else:
        raise AssertionError(f"{what} was not refused")
    made = model.calls + (proposer.calls if isinstance(proposer, CountingModel) else 0)
    assert made == 0, f"{what} was refused only after {made} model calls"


def check_resume(case: ContractCase, workdir: Path, reference: ContractRun | None = None) -> None:
    """A run stopped after ``stop_after`` trials and resumed with the same budget reaches the uninterrupted run's best
    prompt and dev and test scores, paying no call twice (the same calls by role, at least as many cache hits)."""
    ref = reference or reference_run(case, workdir)
    n, k = ref.result.n_trials, case.stop_after if case.stop_after is not None else ref.result.n_trials // 2 - 1
    k = max(0, k + n if k < 0 else k)
    run_dir, stopped = _fresh(workdir, "resumed"), list[int]()

    def stop(event: Event) -> None:  # the public way for a callback to end a run
        if isinstance(event, TrialFinished) and event.record.trial >= k and not stopped:
            stopped.append(event.record.trial)
            event.state.request_stop(f"contract: stopped after trial {event.record.trial}")

    first = run_case(case, run_dir, callbacks=[stop])
    assert stopped, f"{case.name}: the run ended before trial {k}, so it could not be stopped there"
    assert first.result.n_trials < n or n == 1, f"{case.name}: stopped after trial {k}, nothing was left to resume"
    r, want = run_case(case, run_dir, resume=True).result, ref.result
    who = f"{case.name}: stopped after trial {k} and resumed,"
    got_best, want_best = (f"{x.best_prompt.id} ({x.best_prompt.instruction!r})" for x in (r, want))
    assert got_best == want_best, f"{who} the run chose {got_best}, the uninterrupted run {want_best}"
    for split, got, expected in (("dev", r.best_dev, want.best_dev), ("test", r.best_test, want.best_test)):
        scores = ({key: v for key, v in (s or {}).items() if key != "calls"} for s in (got, expected))  # calls: paid
        assert next(scores) == next(scores), f"{who} its best {split} score differs: {got} vs {expected}"
    calls, want_calls = calls_by_role(r, LIMITED_ROLES), calls_by_role(want, LIMITED_ROLES)
    assert calls == want_calls, f"{who} the two parts paid {calls} calls, the uninterrupted run {want_calls}"
    hits, want_hits = (sum(calls_by_role(x, LIMITED_ROLES, "cache_hits").values()) for x in (r, want))
    assert hits >= want_hits, f"{who} {hits} cache hits, fewer than the uninterrupted run's {want_hits}"


def check_history(case: ContractCase, workdir: Path, reference: ContractRun | None = None) -> None:
    """history.jsonl: every line parses; trials 0..n-1; each record has a prompt, status, full flag and a
    non-decreasing calls_so_far; each complete full-dev record scores every dev example once; trial 0 is the seed;
    the best prompt is a complete full-dev record. result.json loads to the result, usage.json matches it."""
    ref = reference or reference_run(case, workdir)
    rows, result, last = read_history(ref.run_dir), ref.result, -1
    where = f"{case.name}: {ref.run_dir / 'history.jsonl'}"
    dev_ids = sorted(ex.id for ex in case.load_task().dev)
    for i, row in enumerate(rows):
        missing = [key for key in ("trial", "prompt", "status", "full", "calls_so_far") if key not in row]
        assert not missing, f"{where}: line {i + 1} lacks {missing}"
        assert row["trial"] == i, f"{where}: line {i + 1} is trial {row['trial']}, expected {i} (0..n-1, no gaps)"
        assert Prompt.from_dict(row["prompt"]).id == row["prompt"].get("id"), f"{where}: trial {i}'s prompt id"
        assert row["status"] in ("complete", "failed"), f"{where}: trial {i} has status {row['status']!r}"
        assert isinstance(row["full"], bool), f"{where}: trial {i} has full={row['full']!r}"
        calls = row["calls_so_far"]
        assert isinstance(calls, int) and calls >= last, f"{where}: trial {i} has calls_so_far={calls!r} after {last}"
        last = calls
        if row["status"] != "complete":
            continue
        records = (row.get("result") or {}).get("records", [])
        assert records, f"{where}: complete trial {i} has no per-example records"
        assert all(isinstance(r.get("score"), int | float) for r in records), f"{where}: trial {i}: a score is missing"
        ids = sorted(r["example_id"] for r in records)
        assert not row["full"] or ids == dev_ids, f"{where}: full-dev trial {i} does not score each dev example once"
    assert result.n_trials == len(rows), f"{where}: {len(rows)} lines, but the result has {result.n_trials} trials"
    assert rows[0]["prompt"]["id"] == result.seed_prompt.id, f"{where}: trial 0 is not the seed prompt"
    best = [r for r in rows if r["prompt"]["id"] == result.best_prompt.id and r["full"] and r["status"] == "complete"]
    assert best, f"{where}: the best prompt {result.best_prompt.id} has no complete full-dev record"
    mean = sum(r["score"] for r in best[0]["result"]["records"]) / len(dev_ids)
    assert math.isclose(mean, result.best_dev["mean"]), f"{where}: the best prompt's record scores {mean}"
    loaded = OptimizationResult.load(ref.run_dir / "result.json")
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict())), f"{case.name}: result.json is not the result"
    usage = json.loads((ref.run_dir / "usage.json").read_text(encoding="utf-8"))
    assert usage.get("total") == result.usage.get("total"), f"{case.name}: usage.json is not the result's usage"


def render_export(directory: Path, inputs: Mapping[str, Any], messages_file: str = "messages.json") -> list[Any]:
    """The chat an export gives for ``inputs``, rendered as its README says with plain Jinja2 (messages_sets.json:
    one chat per demo set)."""
    import jinja2

    template = jinja2.Template((directory / "template.jinja").read_text(encoding="utf-8"))

    def render(spec: list[Any] | dict[str, Any]) -> Any:
        if isinstance(spec, list):
            return [render(m) for m in spec]
        if "template" not in spec:
            return {"role": spec["role"], "content": spec["content"]}
        demos = json.loads((directory / spec["demos"]).read_text(encoding="utf-8")) if spec["demos"] else []
        content = template.render(instruction=spec["instruction"], demos=demos, **inputs).strip()
        return {"role": spec["role"], "content": content}

    return render(json.loads((directory / messages_file).read_text(encoding="utf-8")))


def check_export(case: ContractCase, workdir: Path, reference: ContractRun | None = None) -> None:
    """run_dir/best_prompt renders with plain Jinja2 for every dev and test example exactly as ``Prompt.render``
    renders the best prompt; an In-Context Sampling prompt per demo set (set j: its j-th sub-prompt; set 1 is what
    ``Prompt.render`` gives), or, picking demos per query, it carries its demo pool."""
    ref = reference or reference_run(case, workdir)
    out, best = ref.run_dir / "best_prompt", ref.result.best_prompt
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest.get("id") == best.id, f"{case.name}: {out} exports prompt {manifest.get('id')}, not {best.id}"
    assert Prompt.load(out).id == best.id, f"{case.name}: Prompt.load({out}) is not the best prompt"
    carried = best.soft_prompt is None or (manifest.get("soft_prompt") and (out / manifest["soft_prompt"]).is_dir())
    assert carried, f"{case.name}: the best prompt has a soft prompt, but {out} does not carry it"
    task = case.load_task()
    examples: list[Example] = [*task.dev, *task.test]
    variables = manifest.get("input_variables", [])
    assert set(variables) <= set(examples[0].inputs), f"{case.name}: the export needs inputs {variables}"
    if best.ics is not None and not best.ics.demo_sets:  # demos picked per query: the pool travels with it
        pool = json.loads((out / "demo_pool.json").read_text(encoding="utf-8"))
        assert len(pool) == len(best.ics.pool), f"{case.name}: {out}/demo_pool.json lacks demos of the pool"
        return
    for ex in examples:
        inputs = {k: ex.inputs[k] for k in variables}
        want: list[Any] = [m.to_dict() for m in best.render(ex)]
        if best.ics is None:
            got = render_export(out, inputs)
        else:
            got = render_export(out, inputs, "messages_sets.json")
            subs = [dataclasses.replace(best, demos=s, ics=None) for s in best.ics.demo_sets]
            sets = [[m.to_dict() for m in sub.render(ex)] for sub in subs]
            assert sets[0] == want, f"{case.name}: Prompt.render is not the first sub-prompt for {ex.id}"
            want = sets
        assert got == want, f"{case.name}: the export renders {got} for {ex.id}, Prompt.render gives {want}"


Check = Callable[[ContractCase, Path, ContractRun | None], None]
CHECKS: dict[str, Check] = {"determinism": check_determinism, "budget": check_budget, "resume": check_resume,
                            "history": check_history, "export": check_export}  # fmt: skip
"""The contract, by check name (the test ids of tests/unit/optimizers/test_contracts.py)."""


def check_all(case: ContractCase, workdir: Path) -> None:
    """Every check on ``case``, sharing one reference run."""
    reference = reference_run(case, workdir)
    for check in CHECKS.values():
        check(case, workdir, reference)
