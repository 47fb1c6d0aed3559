"""``promptopt worker``: more workers on one ``structure_search`` study, and the study's one merged result.

A study is created by ``promptopt optimize --optimizer structure_search --storage URL [--study NAME]`` (any Optuna
RDB URL; PostgreSQL for several machines). It stores that run's settings (task, model spec, optimizer settings,
seed, budget, cache), so ``promptopt worker --storage URL --study NAME`` needs nothing else: each worker is its own
promptopt run (own run directory and budget) asking the study for trials until it has ``n_trials``. What a worker
must repeat: ``--api-base`` / ``--model-opt`` (endpoints and keys are never stored), and ``--cache`` when the
creating run's cache URL had a password (stored without it). Share the response cache too
(``--cache postgresql://…``) so that no worker pays for a request another one made.

Heartbeats (``heartbeat`` seconds, on with ``storage``): a killed worker's RUNNING trial is failed by the next
worker asking for one after 3 heartbeats without a beat, and queued again (``max_retry`` times).

``--finalize`` merges the study instead: every worker's finished trials ranked by mean trial value
(the leaderboard), the ``n_confirm`` leaders and the seed prompt scored on full dev, the best of them scored
on test once; ``study-result.json``, ``leaderboard.md`` and the best prompt's export are written to a new run
directory. With a shared cache, the full-dev evaluations workers already made cost nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from promptopt.cli.errors import guarded, out
from promptopt.cli.options import (
    ApiBase,
    BudgetCalls,
    CachePath,
    ModelOpts,
    QuietBars,
    RunsDir,
    Verbose,
    build_model,
)
from promptopt.cli.progress import progress, setup_logging
from promptopt.cli.study_result import merge, structure_optimizer, study_config
from promptopt.core.exceptions import ConfigError

StorageUrl = Annotated[str, typer.Option("--storage", help="Optuna storage URL of the study (e.g. postgresql://…).")]
StudyName = Annotated[str, typer.Option("--study", help="The study's name (structure_search's study_name).")]
WaitSeconds = Annotated[
    float, typer.Option("--wait", help="Seconds to wait for the study to be created (workers may start first).")
]
Finalize = Annotated[
    bool, typer.Option("--finalize", help="Merge the study: leaderboard, best on full dev, test score once.")
]


def created_study(storage: str, study: str, wait: float) -> Any:
    """The study, once its creating run has stored its settings, waiting up to ``wait`` seconds for that."""
    from promptopt.optimizers.structure_study import RUN_CONFIG, load_study

    deadline = time.monotonic() + wait
    while True:
        try:
            shared = load_study(storage, study)
            if RUN_CONFIG in shared.user_attrs or time.monotonic() >= deadline:
                return shared
        except ConfigError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def worker(
    storage: StorageUrl,
    study: StudyName,
    finalize: Finalize = False,
    wait: WaitSeconds = 0.0,
    cache: CachePath = None,
    api_base: ApiBase = None,
    model_opt: ModelOpts = [],  # noqa: B006
    budget_calls: BudgetCalls = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: QuietBars = False,
    verbose: Verbose = False,
) -> None:
    """Work on a structure_search study another promptopt optimize created (or --finalize: merge its result)."""
    setup_logging(verbose)

    def run() -> str:
        from promptopt.api import optimize
        from promptopt.models.budget import Budget
        from promptopt.run.rundir import new_run_dir

        shared = created_study(storage, study, wait)
        cfg, cache_spec = study_config(shared, cache)
        model = build_model(cfg["model"], api_base, model_opt)
        proposer = build_model(cfg["proposer"], api_base, model_opt, "--proposer")
        task = Path(cfg["task"])
        name = task.parent.name if task.suffix in (".yaml", ".yml") else task.name
        run_dir = new_run_dir(runs_dir, name, "study" if finalize else "worker")
        if finalize:
            return merge(shared, cfg, model, cache_spec, run_dir).format()
        budget = Budget(**cfg["budget"]) if budget_calls is None else Budget(max_calls=budget_calls)
        with progress(not quiet) as handler:
            result = optimize(
                cfg["task"],
                structure_optimizer(cfg, storage, study),
                model,
                proposer=proposer,
                budget=budget,
                seed=cfg["seed"],
                run_dir=run_dir,
                cache=cache_spec,
                callbacks=[handler] if handler else [],
                evaluate_test=False,  # the study's test score comes once, from --finalize
                batch_size=cfg["batch_size"],
                mode=cfg["mode"],
            )
        trials = sum(1 for t in result.trials if not t.full)
        return f"worker done: {trials} trials in {run_dir} ({result.stop_reason}); merge with --finalize"

    out.print(guarded(run), highlight=False, soft_wrap=True)
