"""A ``feedback`` run's trajectory: rebuilt from its history (and ``feedback_trajectory.json``), with step-response
metrics (:func:`read_trajectory`) and a plot (:func:`plot_trajectory`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.control import settling_steps, step_response
from promptopt.run.history import History, TrialRecord

if TYPE_CHECKING:
    from promptopt.optimizers.control import StepResponse

TRAJECTORY_FILE = "feedback_trajectory.json"
"""Every tick of a run, in its run directory (written by the optimizer as it goes)."""


@dataclass(frozen=True)
class Trajectory:
    """A feedback run rebuilt from its history: the ticks, and one score per evaluated prompt."""

    controller: str
    setpoint: float
    ticks: tuple[dict[str, Any], ...]
    scores: tuple[float, ...]
    """Measured dev score of the seed and of every correction, in order."""
    plant_scores: tuple[float, ...]
    """The plant's score after each evaluation (differs from ``scores`` only with ``accept: improve``)."""
    stop: str | None = None
    """Why the loop stopped (known only when reading a run directory)."""

    def response(self, *, band: float | None = None) -> StepResponse:
        """Step-response metrics of the plant's score against its final value."""
        return step_response(list(self.plant_scores), band=band if band is not None else 0.02)

    def settling_steps(self, band: float) -> int | None:
        return settling_steps(list(self.plant_scores), band=band)


def _records(source: History | Iterable[TrialRecord] | str | Path) -> list[TrialRecord]:
    if isinstance(source, str | Path):
        path = Path(source)
        return History.load(path / "history.jsonl" if path.is_dir() else path)
    return list(source)


def read_trajectory(source: History | Iterable[TrialRecord] | str | Path) -> Trajectory:
    """Rebuild the trajectory from a run directory, a history.jsonl file, a History or trial records.

    From a run directory the ticks come from its ``feedback_trajectory.json`` (every tick); otherwise from the
    candidates' meta (every tick that led to an evaluated candidate)."""
    records = [r for r in _records(source) if r.full and r.result is not None]
    if not records:
        raise ConfigError("no full-dev trials in this history.", field="history")
    seed = records[0]
    steps = [(r, r.prompt.meta["feedback"]) for r in records[1:] if "feedback" in r.prompt.meta]
    first = steps[0][1] if steps else {}
    accept = first.get("accept", "always")
    ticks = [t for _, fb in steps for t in fb.get("ticks", ())]
    saved = Path(source) / TRAJECTORY_FILE if isinstance(source, str | Path) else None
    stop = None
    if saved is not None and saved.is_file():  # complete: also the trailing holds and the final tick
        data = json.loads(saved.read_text())
        ticks, stop = list(data["ticks"]), data.get("stop")
        first = first or data
    result_file = Path(source) / "result.json" if isinstance(source, str | Path) else None
    if stop is None and result_file is not None and result_file.is_file():  # e.g. the budget ended the run
        stop = json.loads(result_file.read_text()).get("stop_reason")
    scores = [seed.mean] + [r.mean for r, _ in steps]
    plant = [seed.mean]
    for k, (r, _) in enumerate(steps):
        if accept == "always":
            plant.append(r.mean)
        elif k + 1 < len(steps):  # the next correction's first tick saw the plant after this evaluation
            plant.append(steps[k + 1][1]["ticks"][0]["score"])
        else:
            plant.append(max(plant[-1], r.mean))
    return Trajectory(
        controller=first.get("controller", "?"),
        setpoint=float(first.get("setpoint", 1.0)),
        ticks=tuple(ticks),
        scores=tuple(scores),
        plant_scores=tuple(plant),
        stop=stop,
    )


def plot_trajectory(
    source: History | Iterable[TrialRecord] | str | Path, path: str | Path, *, title: str | None = None
) -> Path:
    """Draw a feedback run's error trajectory to ``path`` (PNG/SVG/PDF by suffix; needs matplotlib).

    Three panels: the dev score per evaluation with the setpoint, the control signal per tick (e_t, the
    P/I/D terms and u_t), and the step size (words allowed vs words changed).
    """
    from promptopt.core._imports import require

    require("matplotlib", extra="bench", feature="plot_trajectory")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = read_trajectory(source)
    resp = tr.response()
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=False, constrained_layout=True)
    ax = axes[0]
    xs = list(range(len(tr.scores)))
    ax.plot(xs, tr.plant_scores, "-", color="C0", label="plant score")
    ax.plot(xs, tr.scores, "o", color="C0", ms=4, label="measured")
    ax.axhline(tr.setpoint, color="k", ls="--", lw=1, label="setpoint")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("dev score")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(
        title or f"{tr.controller.upper()} controller",
        fontsize=10,
    )
    ax.text(
        0.01,
        0.04,
        f"overshoot {resp.overshoot:.0%}  settling {resp.settling_steps}  sign changes {resp.sign_changes}"
        + (f"\nstop: {tr.stop[:90]}" if tr.stop else ""),
        transform=ax.transAxes,
        fontsize=8,
    )
    ax = axes[1]
    t = [d["tick"] for d in tr.ticks]
    for key, style in (("error", "k-o"), ("p", "C1--"), ("i", "C2--"), ("d", "C3--"), ("u", "C0-")):
        ax.plot(t, [d[key] for d in tr.ticks], style, ms=3, lw=1.2, label="e" if key == "error" else key)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("controller tick")
    ax.set_ylabel("control")
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    ax = axes[2]
    ax.step(t, [d["max_words"] for d in tr.ticks], where="mid", color="C0", label="words allowed")
    ax.bar(t, [d.get("edit_words") or 0 for d in tr.ticks], color="C1", alpha=0.6, label="words changed")
    holds = [d["tick"] for d in tr.ticks if d.get("action") == "hold"]
    ax.plot(holds, [0] * len(holds), "x", color="C3", label="hold")
    ax.set_xlabel("controller tick")
    ax.set_ylabel("words")
    ax.legend(loc="upper right", fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def trajectory_json(source: History | Iterable[TrialRecord] | str | Path) -> str:
    """The rebuilt trajectory as JSON (for notebooks and reports)."""
    tr = read_trajectory(source)
    return json.dumps({**asdict(tr), "response": tr.response().to_dict()}, indent=2)
