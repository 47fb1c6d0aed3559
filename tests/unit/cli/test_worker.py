"""Workers on one PostgreSQL study (``promptopt optimize --storage`` + ``promptopt worker``), one of them killed with
SIGKILL mid-trial: the study still finishes, the killed trial is failed and retried, no finished trial is lost, no
request is answered twice except those the dead worker never received, and ``--finalize`` merges one result."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cli.test_cli import TASK_YAML, run, write_task

from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.structure_study import RUN_CONFIG, load_study, open_storage
from promptopt.testing.openai_server import OpenAIServer

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed"),
    pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna not installed"),
]
N_TRIALS = 12
STUDY = "workers"


def last_line(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Answer with the last line of the last user message (the word, for the toy task's template)."""
    user = next(str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user")
    return user.strip().splitlines()[-1]


def cli(*args: str, runs: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "promptopt.cli", *args, "--runs-dir", str(runs), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def created(url: str) -> Any:
    """The study once its creating run stored its settings, else None."""
    try:
        study = load_study(url, STUDY)
    except ConfigError:  # not created yet
        return None
    return study if RUN_CONFIG in study.user_attrs else None


def kill_mid_trial(url: str, study: Any, worker: subprocess.Popen[str], victim: str) -> tuple[Any, float, set[int]]:
    """SIGKILL ``worker`` (run directory ``victim``) while it runs a trial: that trial, the kill's time and the
    trials finished before it."""

    storage = open_storage(url)  # uncached: a RUNNING trial's attributes as they are now

    def victim_trial() -> Any:
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
        running = [t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").startswith(victim)]
        return running[0] if running else None

    try:
        killed = wait_for(victim_trial, 240, "the second worker to run a trial")
    except AssertionError:
        worker.kill()
        states = [
            (t.number, t.state.name, t.user_attrs.get("worker", "")[-12:])
            for t in storage.get_all_trials(study._study_id)
        ]
        raise AssertionError(f"the worker ran no trial: {worker.communicate()} {states}") from None
    time.sleep(0.5)  # into the trial's requests
    finished_before = {t.number for t in storage.get_all_trials(study._study_id) if t.state.name == "COMPLETE"}
    os.kill(worker.pid, signal.SIGKILL)
    return killed, time.monotonic(), finished_before


def test_three_workers_and_a_kill_9(postgres_url: str, tmp_path: Path) -> None:
    rows = [{"word": f"w{i}", "answer": f"w{i}"} for i in range(56)]  # dev 40: trials seldom hit the cache
    splits = TASK_YAML.replace("train: 4, dev: 4, test: 4", "train: 8, dev: 40, test: 8")
    task = write_task(tmp_path / "toy", rows=rows, yaml_text=splits)
    with OpenAIServer(last_line, latency=0.2) as server:
        model = ["--model", "litellm:openai/test-model", "--api-base", server.base_url + "/v1"]
        model += ["--model-opt", "api_key=sk-test"]
        shared = ["--storage", postgres_url, "--cache", postgres_url]
        settings = [f"n_trials={N_TRIALS}", "minibatch_size=4", "n_instructions=0", "heartbeat=1", "n_startup_trials=4"]
        creator = cli(
            "optimize", "--task", str(task), "--optimizer", "structure_search", *model, *shared, "--study", STUDY,
            *[a for s in settings for a in ("--set", s)], "--no-test", runs=tmp_path / "creator",
        )  # fmt: skip

        # the workers start with it and wait for the study (--wait): all three import at once
        workers = [
            cli("worker", *shared, "--study", STUDY, *model[2:], "--wait", "180", runs=tmp_path / f"w{i}")
            for i in (1, 2)
        ]
        try:
            study = wait_for(lambda: created(postgres_url), 180, "the creating run to store its settings")
            server.latency = 30.0  # slow trials until the second worker runs one (workers import slowly on a busy CI)
            killed, kill_time, finished_before = kill_mid_trial(
                postgres_url, study, workers[1], str((tmp_path / "w2").resolve())
            )
            server.latency = 0.2
            outs = [p.communicate(timeout=300) for p in (creator, workers[0])]
        finally:
            for p in (creator, *workers):
                p.kill()
                p.wait()
        assert creator.returncode == 0 and workers[0].returncode == 0, outs
        assert workers[1].returncode == -signal.SIGKILL

        trials = {t.number: t for t in open_storage(postgres_url).get_all_trials(study._study_id)}
        complete = {n for n, t in trials.items() if t.state.name == "COMPLETE"}
        assert len(complete) == N_TRIALS  # the study finished
        assert trials[killed.number].state.name == "FAIL"
        retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
        assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
        assert retries[0].params == trials[killed.number].params
        assert finished_before <= complete  # no finished trial lost
        assert {t.state.name for t in trials.values()} <= {"COMPLETE", "FAIL"}
        # no request answered twice (shared cache + claims), except ones whose answer died with the killed worker
        twice = {k for k, n in server.attempts().items() if n > 1}
        lost = {r.key for r in server.requests if r.started < kill_time and (r.ended is None or r.ended >= kill_time)}
        assert twice <= lost, (twice, lost)
        assert len(twice) <= 4  # at most the killed trial's minibatch

        code, out, err = run("worker", *shared, "--study", STUDY, *model[2:], "--finalize", "--runs-dir", str(tmp_path))
        assert code == 0, err
        merged = json.loads(next(tmp_path.glob("*-study/study-result.json")).read_text())
    assert merged["trials"]["COMPLETE"] == N_TRIALS and merged["trials"]["retries"] >= 1
    workers_seen = {w for row in merged["leaderboard"] for w in row["workers"]}
    assert any(w.startswith(str((tmp_path / "creator").resolve())) for w in workers_seen)
    assert merged["best"]["test_n"] == 8 and "test" in out
    assert sum(row["trials"] for row in merged["leaderboard"]) == N_TRIALS
