"""``promptopt compare``: run several optimizers on one task at the same budget and print the leaderboard
(:func:`promptopt.compare.compare_optimizers`; the files it writes are described there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from promptopt.cli.errors import command_line, err, guarded, out
from promptopt.cli.options import (
    BUDGET,
    OPTIMIZE,
    OPTIMIZE_MAX_ERRORS,
    ApiBase,
    BatchSize,
    BudgetCalls,
    BudgetCost,
    BudgetSeconds,
    BudgetTokens,
    JsonOut,
    MaxErrors,
    ModelOpts,
    Proposer,
    Select,
    TaskModel,
    TaskName,
    build_model,
)
from promptopt.core.exceptions import ConfigError, PromptOptError

OptimizerList = Annotated[
    str, typer.Option("--optimizers", help="Comma-separated optimizer or preset names, e.g. baseline,ape,opro.")
]
SeedList = Annotated[
    str, typer.Option("--seeds", help="Comma-separated run seeds; every optimizer runs once per seed.")
]
OutDir = Annotated[
    Path,
    typer.Option("--out", help="Directory of the compare (runs, caches, leaderboard); run again to continue it."),
]
FIELDS = {"optimizers": "--optimizers", "seeds": "--seeds", "out": "--out"}
"""compare_optimizers' arguments → the options that set them (the shared ones are in cli.errors.OPTIONS)."""


def parse_seeds(text: str) -> list[int]:
    """``--seeds 1,2,3`` as integers."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers like 1,2,3, got {text!r}.", field="--seeds") from None


def _delta(c: dict[str, Any] | None) -> str:
    if not c:
        return "—"
    return f"{c['diff']:+.3f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def leaderboard_table(board: dict[str, Any]) -> Table:
    """The leaderboard as a Rich table, best first (95% CIs in brackets; Δ are paired, on the same test examples)."""
    seeds = len(board["seeds"])
    table = Table(
        "#",
        "optimizer",
        f"test {board['metric']} [95% CI]",
        *(["± sd"] if seeds > 1 else []),
        "Δ vs seed prompt",
        f"Δ vs {board['leader']}",
        "calls",
        "tokens",
        "cost",
        "time",
        title=f"{board['task']}: {board['n_test']} test examples" + (f", mean of {seeds} seeds" if seeds > 1 else ""),
    )
    for row in board["rows"]:
        table.add_row(
            str(row["rank"]),
            escape(row["optimizer"]),
            f"{row['test_mean']:.3f} [{row['test_ci_low']:.2f}, {row['test_ci_high']:.2f}]",
            *([f"{row['test_sd']:.3f}"] if seeds > 1 else []),
            _delta(row["vs_seed"]),
            _delta(row["vs_leader"]),
            f"{row['calls']:g}",
            f"{row['tokens']:g}",
            f"${row['cost']:.4f}",
            f"{row['seconds']:.1f}s",
        )
    return table


def compare(
    ctx: typer.Context,
    task: TaskName,
    optimizers: OptimizerList,
    out_dir: OutDir,
    budget_calls: BudgetCalls = BUDGET.max_calls,
    budget_tokens: BudgetTokens = BUDGET.max_tokens,
    budget_cost: BudgetCost = BUDGET.max_cost,
    budget_seconds: BudgetSeconds = BUDGET.max_seconds,
    seeds: SeedList = "0",
    model: TaskModel = OPTIMIZE["model"],
    proposer: Proposer = OPTIMIZE["proposer"],
    api_base: ApiBase = None,
    model_opt: ModelOpts = [],  # noqa: B006
    max_errors: MaxErrors = OPTIMIZE_MAX_ERRORS,
    select: Select = OPTIMIZE["select"],
    batch_size: BatchSize = OPTIMIZE["batch_size"],
    json_out: JsonOut = False,
) -> None:
    """Compare optimizers on one task at the same budget: every optimizer × seed runs cold (its own cache), then a
    leaderboard of test scores with 95% CIs and paired deltas vs the seed prompt and the leader. Writes
    OUT/leaderboard.json, OUT/leaderboard.csv and OUT/compare.json; run it again with the same --out to continue."""

    def progress(spec: Any, state: str, i: int, n: int) -> None:
        what = {"skip": "finished earlier, skipped", "resume": "resuming", "start": "running"}[state]
        err.print(f"[{i}/{n}] {escape(spec.name)}: {what}", highlight=False)

    def run() -> dict[str, Any]:
        from promptopt.api import check_select
        from promptopt.compare import compare_optimizers
        from promptopt.models.budget import Budget

        if budget_calls is None:
            raise ConfigError(
                "compare runs every optimizer at the same budget; give one, e.g. 200.", field="--budget-calls"
            )
        budget = Budget(
            max_calls=budget_calls, max_tokens=budget_tokens, max_cost=budget_cost, max_seconds=budget_seconds
        )
        try:
            return compare_optimizers(
                task,
                optimizers.split(","),
                model=build_model(model, api_base, model_opt),
                proposer=build_model(proposer, api_base, model_opt, "--proposer"),
                budget=budget,
                seeds=parse_seeds(seeds),
                out=out_dir,
                batch_size=batch_size,
                select=check_select(select),
                max_errors=max_errors,
                on_run=progress,
                command=command_line(ctx),
            )
        except ConfigError as exc:
            if exc.field in FIELDS:
                raise ConfigError(exc.message, source=exc.source, field=FIELDS[exc.field]) from None
            raise
        except KeyboardInterrupt:
            raise PromptOptError(
                f"interrupted; finished runs are kept: run the same command again to continue ({out_dir})."
            ) from None

    board = guarded(run)
    if json_out:
        out.print_json(json.dumps(board))
        return
    out.print(leaderboard_table(board))
    files = ", ".join(str(out_dir / f) for f in ("leaderboard.json", "leaderboard.csv", "compare.json"))
    out.print(f"wrote {files}", highlight=False, soft_wrap=True)
