"""Faults: kill -9 of a run at a chosen moment and resume, concurrent writers of one cache and one runs root,
answers cached as they arrive. Fake models only; each kill is a child process that SIGKILLs itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import promptopt
from promptopt.core.messages import Message
from promptopt.models import Capabilities, Completion, GenerationRequest
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import ResponseCache, request_key
from promptopt.models.client import ModelClient
from promptopt.models.fake import FakeModel
from promptopt.run.history import History
from promptopt.run.rundir import new_run_dir
from promptopt.testing import toy_model, write_toy_task

PROPOSALS = ["Say the word.", "Reverse the word.", "Write the word out.", "Reverse the word, letter by letter."]

# A run of APE on the toy task (fake model, in process) that SIGKILLs itself where the plan says. It logs the key of
# every request whose batch the model answered ("finished" calls) before the run goes on to cache them.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sqlite3, sys
    import promptopt
    from promptopt.models import cache as cache_module
    from promptopt.run import history as history_module
    from promptopt.models.cache import request_key
    from promptopt.testing import TOY_SYSTEM, toy_model

    plan = json.loads(sys.argv[1])
    answered = open(plan["log"], "a")
    commits = appends = test_requests = 0

    def die():
        answered.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    class Connection:  # dies at the commit of the plan's n-th cache write: rows written, not committed
        def __init__(self, conn):
            self._conn = conn
        def __getattr__(self, name):
            return getattr(self._conn, name)
        def commit(self):
            global commits
            if self._conn.in_transaction:
                commits += 1
                if commits == plan.get("commit"):
                    die()
            self._conn.commit()

    class Sqlite:
        def __getattr__(self, name):
            return getattr(sqlite3, name)
        @staticmethod
        def connect(*args, **kwargs):
            return Connection(sqlite3.connect(*args, **kwargs))

    cache_module.sqlite3 = Sqlite()
    append = history_module.History.append

    def append_or_die(self, record):  # half of the plan's n-th history line reaches the disk
        global appends
        appends += 1
        if appends == plan.get("history_line"):
            line = json.dumps(record.to_dict()) + "\\n"
            with self.path.open("a") as f:
                f.write(line[: len(line) // 2])
            die()
        append(self, record)

    history_module.History.append = append_or_die
    model = toy_model(plan["proposals"])
    generate = model.generate

    def logged(requests):
        global test_requests
        for r in requests:
            if r.messages[0].content == TOY_SYSTEM and any(w in r.messages[-1].content for w in plan["test_words"]):
                test_requests += 1
                if test_requests == plan.get("test_request"):
                    die()  # inside the test evaluation: this batch never returns
        out = generate(requests)
        answered.write("".join(request_key(model.name, r.key()) + "\\n" for r in requests))
        answered.flush()
        return out

    model.generate = logged
    opt = promptopt.load_optimizer("ape", n_prompts=4, minibatch_size=6, top_k=2, resample_rounds=1, n_resample=2)
    promptopt.optimize(plan["task"], opt, model, run_dir=plan["run_dir"], cache=plan["cache"], batch_size=4,
                       resume=plan["resume"])
    """
)


def ape() -> promptopt.Optimizer:
    return promptopt.load_optimizer("ape", n_prompts=4, minibatch_size=6, top_k=2, resample_rounds=1, n_resample=2)


def essence(result: promptopt.OptimizationResult) -> dict[str, Any]:
    assert result.best_test is not None
    return {"best": result.best_prompt.id, "test": result.best_test["mean"], "dev": result.best_dev["mean"],
            "trials": result.n_trials, "calls": result.usage["total"]["calls"]}  # fmt: skip


def run(task: Path, run_dir: Path, cache: Path, *, resume: bool) -> tuple[promptopt.OptimizationResult, list[str]]:
    """The run in this process; its result and the keys of the calls the model answered."""
    model = toy_model(PROPOSALS)
    result = promptopt.optimize(task, ape(), model, run_dir=run_dir, cache=cache, batch_size=4, resume=resume)
    return result, [request_key(model.name, r.key()) for r in model.requests]


def killed(tmp_path: Path, task: Path, *, resume: bool = False, **at: int) -> list[str]:
    """Run the child until it kills itself ``at`` the given moment; the keys of the calls it finished."""
    log = tmp_path / f"answered-{len(list(tmp_path.glob('answered-*')))}.log"
    test_words = [ex.inputs["word"] for ex in promptopt.load_task(task).test]
    plan = {"task": str(task), "run_dir": str(tmp_path / "run"), "cache": str(tmp_path / "cache.sqlite"),
            "log": str(log), "proposals": PROPOSALS, "test_words": test_words, "resume": resume, **at}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(plan)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return log.read_text().split()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str]]:
    tmp = tmp_path_factory.mktemp("reference")
    task = write_toy_task(tmp / "toy")
    result, calls = run(task, tmp / "run", tmp / "cache.sqlite", resume=False)
    return task, essence(result), calls


def stored(cache: Path) -> set[str]:
    return set(dict(ResponseCache(cache)._conn.execute("SELECT key, value FROM responses").fetchall()))


@pytest.mark.parametrize(
    "kills",
    [
        pytest.param([{"commit": 5}], id="at-a-cache-commit"),
        pytest.param([{"history_line": 3}], id="mid-history-line"),
        pytest.param([{"test_request": 2}], id="in-the-test-evaluation"),
        pytest.param([{"commit": 3}, {"history_line": 4}], id="twice"),
    ],
)
def test_killed_runs_resume_to_the_same_result_paying_no_stored_call_twice(
    tmp_path: Path, reference: tuple[Path, dict[str, Any], list[str]], kills: list[dict[str, int]]
) -> None:
    task, expected, reference_calls = reference
    cache = tmp_path / "cache.sqlite"
    finished: list[str] = []  # calls the killed processes' model answered
    lost: list[str] = []  # of those, the ones the kill kept out of the cache
    for i, at in enumerate(kills):
        before = stored(cache) if cache.exists() else set()
        calls = killed(tmp_path, task, resume=i > 0, **at)
        missing = [k for k in calls if k not in stored(cache)]
        if "commit" in at:  # exactly the batch (4 calls) whose commit the kill interrupted
            assert len(missing) == 4 and not set(missing) & before
        else:
            assert missing == []
        finished, lost = finished + calls, lost + missing
    if "history_line" in kills[-1]:
        assert not (tmp_path / "run" / "history.jsonl").read_bytes().endswith(b"\n")  # a torn last line
    cached = stored(cache)
    result, resumed_calls = run(task, tmp_path / "run", cache, resume=True)
    assert essence(result) == expected
    assert not set(resumed_calls) & cached  # no call that was cached was paid again
    assert Counter(finished) + Counter(resumed_calls) - Counter(reference_calls) == Counter(lost)
    assert set(finished) | set(resumed_calls) == set(reference_calls)
    assert len(History.load(tmp_path / "run" / "history.jsonl")) == expected["trials"]


WRITER = textwrap.dedent(
    """
    import sys
    from promptopt.models.cache import ResponseCache
    cache, index, rows = ResponseCache(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for j in range(0, rows, 5):
        own = {f"{index}-{k}": {"text": f"{index} {k}"} for k in range(j, j + 5)}
        shared = {f"shared-{k}": {"text": f"shared {k}"} for k in range(j, j + 5)}
        cache.put_many(own)
        cache.put_many(shared)
        assert len(cache.get_many([*own, *shared])) == 10
    """
)


def test_four_processes_write_one_cache_without_losing_a_row(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{i}", "100"]) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    cache = ResponseCache(path)
    want = {f"w{i}-{k}": {"text": f"w{i} {k}"} for i in range(4) for k in range(100)}
    want |= {f"shared-{k}": {"text": f"shared {k}"} for k in range(100)}
    assert len(cache) == len(want) and cache.get_many(want) == want
    assert cache._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_runs_started_in_the_same_second_get_their_own_run_directories(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path / "runs", "toy", "ape") for _ in range(4)]  # one second: the same stamp
    assert len(set(dirs)) == 4 and all(d.is_dir() and not any(d.iterdir()) for d in dirs)


class StreamingModel(FakeModel):
    """Answers one request at a time and reports each (like the litellm backend); dies after ``dies_after``."""

    def __init__(self, dies_after: int | None = None) -> None:
        super().__init__(name="fake:streaming")
        self.dies_after = dies_after

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(streams_results=True)

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: Callable[[int, Completion], None] | None = None
    ) -> list[Completion]:
        out = []
        for i, request in enumerate(requests):
            if i == self.dies_after:
                raise KeyboardInterrupt  # the process is stopped mid-batch
            (completion,) = super().generate([request])
            if on_result is not None:
                on_result(i, completion)
            out.append(completion)
        return out


def test_answers_are_cached_and_charged_as_they_arrive_not_when_the_batch_ends(tmp_path: Path) -> None:
    requests = [GenerationRequest(messages=(Message("user", f"question {i}"),)) for i in range(6)]
    cache, tracker = ResponseCache(tmp_path / "cache.sqlite"), BudgetTracker()
    client = ModelClient(StreamingModel(dies_after=4), cache=cache, budget=tracker, batch_size=6)
    with pytest.raises(KeyboardInterrupt):
        client.generate(requests)
    assert len(cache) == 4 and tracker.total.calls == 4  # the four answers that arrived are kept and paid once
    model = StreamingModel()
    again = ModelClient(model, cache=cache, budget=tracker, batch_size=6).generate(requests)
    assert [r.messages[0].content for r in model.requests] == ["question 4", "question 5"]
    assert [c.text for c in again] == [f"question {i}" for i in range(6)] and tracker.total.calls == 6
