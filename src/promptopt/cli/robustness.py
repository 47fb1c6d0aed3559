"""``promptopt robustness``: a prompt's score under semantically equivalent instructions
(:func:`promptopt.api.robustness`) and the interval it spans, like ``promptopt spread`` for formats."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from promptopt import api
from promptopt.cli.errors import guarded, out
from promptopt.cli.options import (
    EVALUATE_MAX_ERRORS,
    BatchSize,
    CachePath,
    EvalMode,
    JsonOut,
    Limit,
    MaxErrors,
    ModelSpec,
    PromptPath,
    Proposer,
    Split,
    TaskName,
    api_defaults,
    load_prompt,
)
from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.config import is_one_of
from promptopt.optimizers.paraphrases import Source

ROBUSTNESS = api_defaults(api.robustness)
SOURCES: tuple[Source, ...] = ("both", "rules", "proposer")
Paraphrases = Annotated[int, typer.Option("--paraphrases", "-n", help="Equivalent instructions to score.")]
Proposals = Annotated[
    int | None, typer.Option("--proposals", help="Proposer rewrites to ask for (default: 2 × --paraphrases).")
]
SourceOpt = Annotated[str, typer.Option("--source", help="both, rules (no proposer calls) or proposer.")]
EmbedderOpt = Annotated[str, typer.Option("--embedder", help="Similarity screen: auto, minilm or tfidf.")]
ParaphraseSeed = Annotated[int, typer.Option("--seed", help="Seed of the rule-based sample.")]


def robustness(
    task: TaskName,
    prompt: PromptPath = ROBUSTNESS["prompt"],
    model: ModelSpec = ROBUSTNESS["model"],
    paraphrases: Paraphrases = ROBUSTNESS["paraphrases"],
    proposer: Proposer = ROBUSTNESS["proposer"],
    proposals: Proposals = ROBUSTNESS["proposals"],
    source: SourceOpt = ROBUSTNESS["source"],
    embedder: EmbedderOpt = ROBUSTNESS["embedder"],
    split: Split = ROBUSTNESS["split"],
    limit: Limit = ROBUSTNESS["limit"],
    seed: ParaphraseSeed = ROBUSTNESS["seed"],
    mode: EvalMode = ROBUSTNESS["mode"],
    cache: CachePath = None,
    batch_size: BatchSize = ROBUSTNESS["batch_size"],
    max_errors: MaxErrors = EVALUATE_MAX_ERRORS,
    json_out: JsonOut = False,
) -> None:
    """Rephrasing robustness: score a prompt under N semantically equivalent instructions (the proposer's rewrites
    and rule-based ones, screened for equivalence) and print the interval (min, median, max)."""

    def run() -> Any:
        from promptopt.api import check_mode
        from promptopt.models.budget import BudgetTracker, ErrorLimit

        if not is_one_of(source, SOURCES):
            raise ConfigError(f"unknown source {source!r}; use {', '.join(SOURCES)}.", field="source")
        return api.robustness(
            task,
            model,
            load_prompt(prompt),
            paraphrases=paraphrases,
            proposer=proposer,
            proposals=proposals,
            source=source,
            embedder=embedder,
            seed=seed,
            split=split,
            limit=limit,
            cache=cache if cache is not None else ROBUSTNESS["cache"],
            batch_size=batch_size,
            mode=check_mode(mode),
            tracker=BudgetTracker(max_errors=ErrorLimit.of(max_errors)),
        )

    result = guarded(run)
    if json_out:
        out.print_json(json.dumps(result.summary()))
        return
    table = Table("#", "instruction", "source", result.results[0].metric, "95% CI")
    for i, (text, src, r) in enumerate(zip(result.instructions, result.sources, result.results, strict=True)):
        lo, hi = r.ci
        table.add_row(str(i), text, src, f"{r.mean:.3f}", f"{lo:.3f}–{hi:.3f}")
    out.print(table)
    out.print(result.format(), highlight=False, soft_wrap=True)
    if result.rejected:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items()))
        out.print(f"screened out: {shown} (of {result.proposed} proposer rewrites and the rule-based set)")
