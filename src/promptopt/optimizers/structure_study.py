"""The Optuna study behind ``structure_search`` as something several workers share.

- :func:`open_storage`: the storage for a URL (PostgreSQL through psycopg 3, SQLite, any SQLAlchemy URL), with
  heartbeats: a RUNNING trial whose worker stopped beating for ``grace`` seconds is failed by the next worker
  that asks for a trial (:func:`fail_stale`) and its parameters are queued again
  (Optuna's retry callback, up to ``max_retry`` times), so a killed worker's trial is retried by the others.
- :func:`beating`: the heartbeat of one trial while it is evaluated (a thread; Optuna's own runs only inside
  ``Study.optimize``, and promptopt asks and tells).
- :func:`load_study` / :data:`RUN_CONFIG`: a study created by ``promptopt optimize`` stores that run's settings
  (task, model spec, optimizer settings, seed, …), so ``promptopt worker`` needs only the URL and the study name.
- :func:`leaderboard`: the study's candidates from all workers' finished trials, best mean trial value first.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError
from promptopt.models.cache import redact, sqlalchemy_url
from promptopt.optimizers.structure_space import SearchSpace, StructureSearchConfig
from promptopt.prompts.formats import has_options, sample_formats

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.task import Task

OPEN_ATTEMPTS = 5
"""Tries to open a storage: the first workers on a new database race to create Optuna's tables."""
RUN_CONFIG = "promptopt_run"
"""Study user attribute: the creating run's config.json (what a worker repeats)."""


def _optuna() -> Any:
    return require("optuna", extra="optuna", feature="the structure_search optimizer")


def open_storage(url: str | None, *, heartbeat: int = 0, grace: int | None = None, max_retry: int = 3) -> Any:
    """Optuna storage for ``url`` (None: in memory). ``heartbeat`` > 0 (seconds) turns on stale-trial recovery."""
    optuna = _optuna()
    if url is None:
        return optuna.storages.InMemoryStorage()
    # several workers on one SQLite file wait for each other's writes instead of failing at once
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beat: dict[str, Any] = {}
    if heartbeat > 0:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        key = "heartbeat_stale_trial_callback" if retry is not None else "failed_trial_callback"
        retry = retry or optuna.storages.RetryFailedTrialCallback
        with warnings.catch_warnings():  # the retry callback is "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beat = {"heartbeat_interval": heartbeat, "grace_period": grace or 3 * heartbeat, key: retry(max_retry)}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, **beat)
        except Exception as exc:  # SQLAlchemy's errors (an optional import)
            if type(exc).__module__.split(".")[0] not in ("sqlalchemy", "psycopg", "optuna"):
                raise
            if attempt == OPEN_ATTEMPTS - 1:
                raise ConfigError(f"cannot open the Optuna storage {redact(url)} ({exc}).", field="storage") from None
            time.sleep(0.2 * (attempt + 1))  # workers creating Optuna's tables in a new database at once collide
    raise AssertionError("unreachable")


def fail_stale(study: Any) -> None:
    """Fail the trials whose worker stopped beating and queue their retries (no-op without heartbeats)."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def ask(study: Any) -> Any:
    """``study.ask()`` without Optuna's warning that heartbeats are meant for ``Study.optimize`` (:func:`beating`
    keeps them here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


@contextmanager
def beating(storage: Any, trial: Any, interval: int) -> Iterator[None]:
    """Record ``trial``'s heartbeat every ``interval`` seconds while the block runs (nothing when ``interval`` is 0)."""
    if interval <= 0:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_study(url: str, name: str, **storage: Any) -> Any:
    """The existing study ``name`` at ``url``; a ConfigError naming the study names there when it is missing."""
    optuna = _optuna()
    store = open_storage(url, **storage)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise ConfigError(
            f"no study {name!r} in {redact(url)} (studies there: {', '.join(names) or 'none'}); create it with "
            "promptopt optimize --optimizer structure_search --set storage=URL --set study_name=NAME.",
            field="--study",
        ) from None


def make_space(config: StructureSearchConfig, task: Task, seed: int, instructions: list[str], mode: str) -> SearchSpace:
    """A study's search space: the FormatSpread formats drawn for ``seed``, the aggregations label scoring
    allows (``mode`` is the evaluator's resolved mode), the study's instruction texts."""
    aggregations = [a for a in config.aggregations if a == "vote" or mode == "score"]
    if not aggregations:
        raise ConfigError("aggregation 'confidence' needs label scoring; add 'vote'.", field="aggregations")
    return SearchSpace(
        config=config,
        task=task,
        seed=seed,
        formats=sample_formats(config.n_formats, seed=seed, enumeration=has_options(task)),
        aggregations=aggregations,
        instructions=instructions,
    )


@dataclass(frozen=True)
class Entry:
    """One candidate of a study: its prompt, the values of its finished trials and the workers that ran them."""

    prompt: Prompt
    values: tuple[float, ...]
    workers: frozenset[str]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def leaderboard(study: Any, space: SearchSpace) -> list[Entry]:
    """Every candidate with a finished trial in the study (all workers), best mean trial value first (ties: more
    trials, then the earlier)."""
    states = _optuna().trial.TrialState
    found: dict[str, tuple[Prompt, list[float], set[str]]] = {}
    for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,)):
        prompt = space.build(dict(t.params))
        _, values, workers = found.setdefault(prompt.id, (prompt, [], set()))
        values.append(float(t.value))
        workers.add(str(t.user_attrs.get("worker", "?")))
    entries = [Entry(p, tuple(v), frozenset(w)) for p, v, w in found.values()]
    return sorted(entries, key=lambda e: (e.mean, len(e.values)), reverse=True)
