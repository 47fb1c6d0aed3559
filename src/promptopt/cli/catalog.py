"""The listings: ``tasks list/show``, ``optimizers list/show`` and ``models list`` (no model calls)."""

from __future__ import annotations

import json
import sys
from functools import partial

import typer
from rich.table import Table

from promptopt.cli.errors import guarded, out
from promptopt.cli.options import ListingJson

tasks_app = typer.Typer(help="Tasks shipped in tasks/ or found on PROMPTOPT_TASKS.", no_args_is_help=True)
optimizers_app = typer.Typer(help="Optimizers and presets.", no_args_is_help=True)
models_app = typer.Typer(help="Model specs.", no_args_is_help=True)


@tasks_app.command("list")
def tasks_list(json_out: ListingJson = False) -> None:
    """List available tasks."""
    from promptopt.core.taskfile import available_tasks

    found = available_tasks()
    if json_out:
        out.print_json(json.dumps({k: str(v) for k, v in found.items()}))
        return
    table = Table("task", "path")
    for name, path in found.items():
        table.add_row(name, str(path.parent))
    out.print(table)


@tasks_app.command("show")
def tasks_show(name: str, json_out: ListingJson = False) -> None:
    """Show a task: type, labels, metric, parser, split sizes, seed instruction and a rendered example."""
    from promptopt.core.taskfile import load_task

    task = guarded(lambda: load_task(name))
    summary = task.summary()
    ex = task.dev[0]
    summary["example"] = {"messages": [m.to_dict() for m in task.seed_prompt().render(ex)], "target": ex.target}
    if json_out:
        out.print_json(json.dumps(summary, default=str))
        return
    for key, value in summary.items():
        if key != "example":
            out.print(f"[bold]{key}[/]: {value}", highlight=False)
    out.print("[bold]seed prompt on the first dev example[/]:")
    for m in summary["example"]["messages"]:
        out.print(f"  [{m['role']}] {m['content']}", highlight=False, markup=False)
    out.print(f"  [target] {ex.target}", highlight=False, markup=False)


@optimizers_app.command("list")
def optimizers_list(json_out: ListingJson = False) -> None:
    """List registered optimizers and presets."""
    from promptopt.optimizers import OPTIMIZERS
    from promptopt.optimizers.presets import available_presets, read_preset

    rows = [
        {"name": n, "kind": "optimizer", "optimizer": n, "description": first_doc_line(OPTIMIZERS.get(n))}
        for n in OPTIMIZERS.names()
    ]
    for name, path in available_presets().items():
        spec = guarded(partial(read_preset, path))
        rows.append(
            {"name": name, "kind": "preset", "optimizer": spec["optimizer"], "description": spec.get("description", "")}
        )
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "optimizer", "description")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["optimizer"], r["description"])
    out.print(table)


@optimizers_app.command("show")
def optimizers_show(name: str) -> None:
    """Show an optimizer's or preset's full configuration."""
    from promptopt.optimizers.presets import load_optimizer

    opt = guarded(lambda: load_optimizer(name))
    out.print(f"[bold]{name}[/] → {type(opt).__name__}: {first_doc_line(type(opt))}", highlight=False)
    out.print_json(json.dumps(opt.to_config()))


@models_app.command("list")
def models_list(json_out: ListingJson = False) -> None:
    """List the model spec forms."""
    from promptopt.models import describe_models

    rows = describe_models()
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table("spec", "backend", "description")
    for r in rows:
        table.add_row(r["spec"], r["backend"], r["description"])
    out.print(table)


def first_doc_line(obj: object) -> str:
    """The first line of ``obj``'s docstring, else of its module's."""
    doc = (obj.__doc__ or "").strip() or (sys.modules[obj.__module__].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
