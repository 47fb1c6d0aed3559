"""One run directory as one self-contained ``report.html``: the score trajectory, the candidates, the spend, seed vs
best on test, how the best prompt was chosen, and the best prompt as the model sees it.

The run directory is read as data (:func:`read_run`); an unfinished run (no result.json yet) still gets a report of
what it has. Nothing is fetched when the page is viewed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promptopt.report.page as h
from promptopt.core._files import write_text_atomic
from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.task import Task
from promptopt.prompts.ics import render_all
from promptopt.report.svg import PALETTE, Series, interval_chart, line_chart
from promptopt.run.history import History, TrialRecord
from promptopt.run.result import OptimizationResult

REPORT_FILE = "report.html"
ROLES = ("task", "proposer", "train", "report")


@dataclass(frozen=True)
class RunData:
    """What a run directory holds (``result`` is None until the run finishes)."""

    path: Path
    config: dict[str, Any]
    history: list[TrialRecord]
    usage: dict[str, Any]
    result: OptimizationResult | None

    @property
    def name(self) -> str:
        return f"{self.config.get('optimizer', '?')} ({self.path.name})"

    def seed_dev(self) -> float:
        """The seed prompt's dev mean (the result's, else the first full evaluation's)."""
        if self.result is not None:
            return float(self.result.baseline_dev.get("mean", math.nan))
        full = [r for r in self.history if r.full and r.result is not None]
        return full[0].mean if full else math.nan

    def best_so_far(self) -> list[tuple[float, float]]:
        """(calls so far, best full-dev mean yet) after each full evaluation."""
        out: list[tuple[float, float]] = []
        best = -math.inf
        for r in self.history:
            if r.full and r.status == "complete" and r.result is not None and math.isfinite(r.mean):
                best = max(best, r.mean)
                out.append((float(r.calls_so_far), best))
        return out


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc}); the run directory is damaged.", source=str(path)) from None


def read_run(run_dir: str | Path) -> RunData:
    """The files of ``run_dir``; a ConfigError if it is not a run directory."""
    path = Path(run_dir)
    if not (path / "config.json").is_file() and not (path / "history.jsonl").is_file():
        raise ConfigError(
            "not a run directory (no config.json or history.jsonl); give one made by promptopt optimize.",
            source=str(path),
        )
    config = _json(path / "config.json") if (path / "config.json").is_file() else {}
    history = History.load(path / "history.jsonl") if (path / "history.jsonl").is_file() else []
    usage = _json(path / "usage.json") if (path / "usage.json").is_file() else {}
    result = None
    if (path / "result.json").is_file():
        try:
            result = OptimizationResult.from_dict(_json(path / "result.json"))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a run result ({exc}).", source=str(path / "result.json")) from None
        usage = result.usage or usage
    return RunData(
        path=path, config=config if isinstance(config, dict) else {}, history=history, usage=usage, result=result
    )


# -- sections ----------------------------------------------------------------------------------------------------
def trajectory_chart(run: RunData) -> str:
    """Each trial's dev mean against the calls spent so far (full dev filled, minibatch hollow), the best-so-far
    line and the seed's dev score."""
    done = [r for r in run.history if r.status == "complete" and r.result is not None and math.isfinite(r.mean)]

    def tips(rs: list[TrialRecord]) -> list[str]:
        return [
            f"trial {r.trial} · {r.prompt.origin} · {r.prompt.id}: {r.mean:.3f} at {r.calls_so_far} calls" for r in rs
        ]

    full = [r for r in done if r.full]
    mini = [r for r in done if not r.full]
    series = [
        Series("best so far (full dev)", run.best_so_far(), color=PALETTE[2], line="step", markers="none", css="best"),
        Series(
            "full dev",
            [(r.calls_so_far, r.mean) for r in full],
            color=PALETTE[0],
            line="none",
            labels=tips(full),
            css="full",
        ),
        Series(
            "minibatch",
            [(r.calls_so_far, r.mean) for r in mini],
            color=PALETTE[4],
            line="none",
            markers="hollow",
            labels=tips(mini),
            css="minibatch",
        ),
    ]
    refs = [("seed prompt (dev)", run.seed_dev(), PALETTE[1])]
    return line_chart(
        series,
        chart_id="trajectory",
        title="dev score vs model calls",
        x_label="model calls so far",
        y_label="dev mean",
        refs=refs,
    )


def candidates_table(run: RunData) -> str:
    best_id = run.result.best_prompt.id if run.result is not None else None
    rows: list[tuple[Any, ...]] = []
    best = -1
    for r in run.history:
        s = r.result.summary() if r.result is not None else {}
        if r.prompt.id == best_id and r.full and best < 0:
            best = len(rows)
        rows.append(
            (
                r.trial,
                r.step,
                r.prompt.id,
                r.prompt.origin,
                "full dev" if r.full else "minibatch",
                r.status if r.status == "complete" else f"{r.status}: {r.error or ''}",
                h.fmt(s.get("mean")),
                h.ci_text(s),
                s.get("n", ""),
                s.get("calls", ""),
                r.calls_so_far,
            )
        )
    headers = (
        "trial",
        "step",
        "id",
        "origin",
        "evaluated on",
        "status",
        "mean",
        "95% CI",
        "n",
        "calls",
        "calls so far",
    )
    note = '<p class="muted">The highlighted row is the best prompt.</p>' if best >= 0 else ""
    return h.table(headers, rows, numeric=(0, 1, 6, 8, 9, 10), best=best) + note


def spend_table(run: RunData) -> str:
    by_role = run.usage.get("by_role", {})
    roles = [r for r in ROLES if r in by_role] + sorted(set(by_role) - set(ROLES))
    keys = ("calls", "prompt_tokens", "completion_tokens", "tokens", "cost", "cache_hits", "errors")
    rows = [(role, *(h.fmt(by_role[role].get(k, 0), 4) for k in keys)) for role in roles]
    total = run.usage.get("total", {})
    rows.append(("total", *(h.fmt(total.get(k, 0), 4) for k in keys)))
    budget = {k: v for k, v in run.usage.get("budget", {}).items() if v is not None}
    limits = ", ".join(f"{k} {v}" for k, v in budget.items()) or "none"
    elapsed = run.usage.get("elapsed_seconds")
    foot = (
        f'<p class="muted">Roles: task = the task model during the search, proposer = the model writing prompts, '
        f"train = training examples, report = the held-out test evaluation. Budget limits: {h.esc(limits)}. "
        f"Elapsed: {h.esc(h.fmt(elapsed, 1))} s.</p>"
    )
    headers = ("role", "calls", "prompt tokens", "completion tokens", "tokens", "cost (USD)", "cache hits", "errors")
    return h.table(headers, rows, numeric=range(1, 8), best=len(rows) - 1) + foot


def test_section(run: RunData) -> str:
    res = run.result
    if res is None:
        return '<p class="muted">The run has not finished: no result.json yet.</p>'
    if res.best_test is None or res.baseline_test is None:
        return '<p class="muted">Not evaluated on the test split (--no-test).</p>'
    rows = [("seed prompt", res.baseline_test), ("best prompt", res.best_test)]
    chart = interval_chart(
        [(name, s["mean"], s["ci_low"], s["ci_high"]) for name, s in rows],
        chart_id="test",
        title="test scores",
        colors=(PALETTE[1], PALETTE[0]),
    )
    table = h.table(
        ("prompt", "id", "test mean", "95% CI", "n"),
        [
            (name, p.id, h.fmt(s["mean"]), h.ci_text(s), s["n"])
            for (name, s), p in zip(rows, (res.seed_prompt, res.best_prompt), strict=True)
        ],
        numeric=(2, 4),
    )
    c = res.test_comparison
    if not res.improved:
        delta = "<p>The best prompt is the seed prompt: no difference to test.</p>"
    elif c:
        delta = (
            f"<p>Paired difference best − seed on the same test examples: <b>{c['diff']:+.3f}</b> "
            f"[95% CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}], p = {c['p_value']:.3g} ({h.esc(c.get('method', ''))}; "
            f"best better on {h.esc(c.get('b_better', '?'))}, seed better on {h.esc(c.get('a_better', '?'))} "
            "examples).</p>"
        )
    else:
        delta = '<p class="muted">No paired comparison recorded.</p>'
    return table + chart + delta


def decisions_section(run: RunData) -> str:
    res = run.result
    if res is None:
        return '<p class="muted">The run has not finished: no result.json yet.</p>'
    items: list[tuple[str, Any]] = [
        ("selection", res.selection),
        ("stop reason", res.stop_reason),
        ("trials", res.n_trials),
        ("seed prompt, dev", f"{h.fmt(res.baseline_dev.get('mean'))} {h.ci_text(res.baseline_dev)}"),
        ("best prompt, dev", f"{h.fmt(res.best_dev.get('mean'))} {h.ci_text(res.best_dev)}"),
    ]
    if res.search:
        items.append(("candidates", ", ".join(f"{k} {v}" for k, v in res.search.items())))
    if res.rejected:
        items.append(("rejected proposals", ", ".join(f"{k} {v}" for k, v in sorted(res.rejected.items()))))
    if res.racing.get("races"):
        items.append(("racing", ", ".join(f"{k} {v}" for k, v in res.racing.items())))
    notes = "".join(f"<li>{h.esc(n)}</li>" for n in res.notes)
    return h.definitions(items) + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else '<p class="muted">No notes.</p>')


def settings_section(run: RunData) -> str:
    cfg = run.config
    items: list[tuple[str, Any]] = [
        (k, cfg[k]) for k in ("task", "optimizer", "model", "proposer", "seed", "mode", "select") if k in cfg
    ]
    items.append(("optimizer settings", json.dumps(cfg.get("optimizer_config", {}), sort_keys=True)))
    if run.result is not None and run.result.versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in run.result.versions.items())))
    return h.definitions(items)


def _example(run: RunData, prompt: Prompt, task: Task | None) -> tuple[Example, str]:
    """A dev example to render the prompt with, and where it came from."""
    if task is None and run.config.get("task") and not str(run.config["task"]).startswith("<"):
        from promptopt.core.taskfile import load_task

        try:
            task = load_task(str(run.config["task"]))
        except (ConfigError, OSError):
            task = None
    if task is not None and task.splits.get("dev"):
        ex = task.splits["dev"][0]
        return ex, f"the first dev example ({ex.id}) of task {task.name}"
    inputs = {v: "{" + v + "}" for v in sorted(prompt.prompt_template.input_variables)}
    return Example(id="placeholder", inputs=inputs, target=""), (
        "placeholders for the inputs (the task was defined in Python and is not in the run directory)"
    )


def best_prompt_section(run: RunData, task: Task | None) -> str:
    best = _best_prompt(run)
    if best is None:
        return '<p class="muted">No prompt evaluated yet.</p>'
    example, source = _example(run, best, task)
    try:
        msgs = [(m.role, m.content) for m in render_all(best, [example])[0][0]]  # ICS: the first sub-prompt
    except ConfigError as exc:
        return f'<p class="muted">Cannot render this prompt for one example ({h.esc(exc)}).</p>'
    extra = ""
    if best.soft_prompt:
        extra = f'<p class="muted">Plus a trained soft prompt: {h.esc(best.soft_prompt)}.</p>'
    if best.ics is not None:
        extra += f'<p class="muted">In-Context Sampling: {best.ics.k} sub-prompts; shown is the first.</p>'
    head = h.definitions(
        [("id", best.id), ("origin", best.origin), ("demos", len(best.demos)), ("demo format", best.demo_format)]
    )
    return f"{head}<p>The messages the model sees for {h.esc(source)}:</p>{h.messages(msgs)}{extra}"


def _best_prompt(run: RunData) -> Prompt | None:
    if run.result is not None:
        return run.result.best_prompt
    best = max((r for r in run.history if r.full and r.result is not None), key=lambda r: r.mean, default=None)
    return best.prompt if best is not None else None


def render_run(run: RunData, *, task: Task | None = None) -> str:
    """The report page of ``run``."""
    cfg = run.config
    subtitle = (
        f"task {cfg.get('task', '?')} · optimizer {cfg.get('optimizer', '?')} · model {cfg.get('model', '?')} · "
        f"seed {cfg.get('seed', '?')} · {len(run.history)} trials · run directory {run.path}"
    )
    sections = [
        h.section("trajectory", "Score vs model calls", trajectory_chart(run)),
        h.section("candidates", "Candidates", candidates_table(run)),
        h.section("spend", "Spend by role", spend_table(run)),
        h.section("test", "Seed vs best on test", test_section(run)),
        h.section("decisions", "Selection, stop reason, notes", decisions_section(run)),
        h.section("best-prompt", "Best prompt as the model sees it", best_prompt_section(run, task)),
        h.section("settings", "Settings", settings_section(run)),
    ]
    return h.page("promptopt run report", subtitle, sections)


def write_run_report(run_dir: str | Path, out: str | Path | None = None, *, task: Task | None = None) -> Path:
    """Write ``run_dir``'s report (default ``run_dir/report.html``) and return its path. ``task``: the task to take
    the dev example from that shows the best prompt's messages (default: the run's task, when it is a task name or
    directory; else placeholders)."""
    run = read_run(run_dir)
    target = Path(out) if out is not None else run.path / REPORT_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, render_run(run, task=task))
    except OSError as exc:
        raise ConfigError(f"cannot write the report ({exc.strerror}).", source=str(target), field="out") from None
    return target
