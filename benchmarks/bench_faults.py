"""Faults: kill -9 and resume, concurrent writers, injected API faults. Fake models and the loopback server only.

1. **kill -9 and resume.** ``promptopt optimize`` runs the toy task (:mod:`promptopt.testing`) through the litellm
   backend against the loopback OpenAI-compatible server, which answers task requests by the toy rule and proposer
   requests from a script. Each case kills the process with SIGKILL at a random moment: at its k-th model request,
   at a random time, during the held-out test evaluation, at the commit of its n-th response-cache write, or half-way
   through writing its n-th history line (a truncated last line) — then ``--resume`` until it finishes (``twice``:
   the first resume is killed too). Every resume must end with the result of an uninterrupted run (best prompt id,
   test and dev scores, trials, calls), and no finished call may be paid twice: each process logs every answer its
   litellm backend *received* and every answer the response cache *stored* (committed); a request the server gets
   again after a kill for a call stored before it is a finished call paid twice. Counted apart: answers received but
   not yet stored when the kill came, and answers the server sent that never arrived (in flight at the kill).
2. **Concurrent writers.** 2 and 4 processes writing one response cache (distinct and shared keys, reads in
   between); 2 and 4 ``promptopt optimize`` runs started at once on one cache and one runs root; two processes
   converting the same (tiny, built on the spot) model into one cache directory at once.
3. **Injected API faults.** ``promptopt evaluate`` of a 600-example task against the server injecting 429s
   (with Retry-After), 500s, answers slower than the client's timeout, malformed JSON, truncated bodies and
   connection resets, with 3 and with 1 retries; and one ``optimize`` under the same faults. No crash, attempts per
   request bounded by the retries, and every request the server never answered (after all its attempts) must be
   the failed example in the result — the same examples, the same count.

    python benchmarks/bench_faults.py            # ~5 minutes; writes benchmarks/results/faults.{md,json}
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import provenance  # noqa: E402

from promptopt.testing import TOY_SYSTEM, make_toy_task, toy_answer, write_toy_task  # noqa: E402
from promptopt.testing.openai_server import FAULT_KINDS, FaultRates, LoggedRequest, OpenAIServer  # noqa: E402

MODEL = "litellm:openai/toy"
PROPOSALS = (
    "Reverse the word.",
    "Spell the word backwards.",
    "Reverse the word, letter by letter.",
    "Repeat the word.",
    "Write the word in reverse order, letter by letter.",
)
OPTIMIZERS = {"baseline": 40, "ape": 120, "pe2": 120, "fewshot": 150, "ics": 150, "structure-search": 150}
"""Preset → --budget-calls: each run takes seconds."""
SETTINGS = {name: ["--set", "embedder=tfidf"] for name in ("fewshot", "ics", "structure-search")}
"""TF-IDF for similar/diverse demos: MiniLM would load torch in every process."""
KILL_KINDS = ("request", "time", "test", "cache-write", "history-write", "twice")
LATENCY = 0.01
"""Seconds the server takes per answer: a batch of 32 at 8 in flight takes ~40 ms, like a fast API."""
BACKEND = ["--model-opt", "backoff=0.01"]


# -- the child: promptopt's CLI with a log of the answers received and optional self-kills ----------------------
def call_id(messages: Sequence[dict[str, Any]], temperature: float | None, seed: int | None) -> str:
    """One model call as both ends see it (the server's body and the backend's request)."""
    payload = json.dumps([list(messages), float(temperature or 0.0), seed], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def server_call_id(entry: LoggedRequest) -> str:
    return call_id(entry.body["messages"], entry.body.get("temperature"), entry.body.get("seed"))


def child(plan: dict[str, Any], argv: list[str]) -> None:
    """Run ``promptopt <argv>`` with the patches ``plan`` asks for (see :func:`spawn`)."""
    from promptopt.cli.app import main
    from promptopt.models import cache as cache_module
    from promptopt.models import litellm as litellm_module
    from promptopt.run import history as history_module

    counts = {"commits": 0, "appends": 0}
    received = os.open(plan["received"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stored = os.open(plan["stored"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    ids: dict[str, str] = {}  # cache key → call id
    generate_one = litellm_module.LiteLLMModel._generate_one

    async def logged(self: Any, request: Any, semaphore: Any) -> Any:
        completion = await generate_one(self, request, semaphore)
        if completion.error is None:
            seed = request.sample if request.temperature > 0 else None
            cid = call_id([m.to_dict() for m in request.messages], request.temperature, seed)
            ids[cache_module.request_key(self.name, request.key())] = cid
            os.write(received, (cid + "\n").encode())
        return completion

    put_many = cache_module.ResponseCache.put_many

    def logged_put(self: Any, items: Any) -> None:
        put_many(self, items)  # committed: log the calls it stored
        done = "".join(ids[k] + "\n" for k in items if k in ids)
        if done:
            os.write(stored, done.encode())

    cache_module.ResponseCache.put_many = logged_put  # type: ignore[method-assign]

    litellm_module.LiteLLMModel._generate_one = logged  # type: ignore[method-assign]

    class Connection:
        """sqlite3 connection that dies at the commit of the ``kill_commit``-th write."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        def commit(self) -> None:
            if self._conn.in_transaction:
                counts["commits"] += 1
                if counts["commits"] == plan.get("kill_commit"):
                    os.kill(os.getpid(), signal.SIGKILL)  # rows written, transaction not committed
            self._conn.commit()

    class Sqlite:
        def __getattr__(self, name: str) -> Any:
            return getattr(sqlite3, name)

        @staticmethod
        def connect(*args: Any, **kwargs: Any) -> Connection:
            return Connection(sqlite3.connect(*args, **kwargs))

    cache_module.sqlite3 = Sqlite()  # type: ignore[assignment]
    append = history_module.History.append

    def append_or_die(self: Any, record: Any) -> None:
        counts["appends"] += 1
        if counts["appends"] == plan.get("kill_append") and self.path is not None:
            line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)  # half a line on disk
        append(self, record)

    history_module.History.append = append_or_die  # type: ignore[method-assign]
    if plan.get("counts"):
        atexit.register(lambda: Path(plan["counts"]).write_text(json.dumps(counts)))
    sys.argv = ["promptopt", *argv]
    main()


# -- the loopback server ----------------------------------------------------------------------------------------
def toy_responder(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Task requests (the toy system message) by the toy rule; proposer requests from the script, by seed."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    if system == TOY_SYSTEM:
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        return toy_answer(user)
    return PROPOSALS[max(int(params.get("seed") or 0) - 1, 0) % len(PROPOSALS)]


class Killer:
    """Wraps a responder: SIGKILLs ``pid`` when ``when(number, messages)`` first holds (number counts from 1)."""

    def __init__(self, responder: Callable[[list[dict[str, Any]], dict[str, Any]], str]) -> None:
        self.responder = responder
        self.pid: int | None = None
        self.when: Callable[[int, list[dict[str, Any]]], bool] | None = None
        self.killed_at: float | None = None
        self.number = 0
        self._lock = threading.Lock()

    def arm(self, pid: int, when: Callable[[int, list[dict[str, Any]]], bool] | None) -> None:
        with self._lock:
            self.pid, self.when, self.number, self.killed_at = pid, when, 0, None

    def __call__(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        with self._lock:
            self.number += 1
            if self.when is not None and self.pid is not None and self.when(self.number, messages):
                self.kill()
        return self.responder(messages, params)

    def kill(self) -> None:
        """SIGKILL the armed process now (once)."""
        if self.pid is not None and self.killed_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.killed_at = time.monotonic()
            self.when = None


@contextlib.contextmanager
def toy_server(**options: Any) -> Iterator[tuple[OpenAIServer, Killer, dict[str, str]]]:
    """A loopback server for the toy task, its killer, and the environment that points litellm at it."""
    killer = Killer(toy_responder)
    with OpenAIServer(killer, latency=LATENCY, **options) as srv:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": srv.base_url + "/v1",  # also on --resume, which does not keep --api-base
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONUNBUFFERED": "1",
        }
        yield srv, killer, env


_spawned = itertools.count()


@dataclass
class Proc:
    """One child process: when it ran (monotonic), how it ended, what its backend received."""

    args: list[str]
    started: float
    ended: float = 0.0
    returncode: int = 0
    killed_at: float | None = None
    received: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    stderr: str = ""


def spawn(
    args: list[str],
    env: dict[str, str],
    work: Path,
    *,
    killer: Killer | None = None,
    when: Callable[[int, list[dict[str, Any]]], bool] | None = None,
    after: float | None = None,
    plan: dict[str, Any] | None = None,
    timeout: float = 300,
) -> Proc:
    """Run ``promptopt <args>`` as a child (see :func:`child`) to the end; ``when`` arms the server's killer,
    ``after`` kills it that many seconds after its first model request (needs ``killer``), ``plan`` asks the child
    to kill itself in a cache or history write."""
    n = next(_spawned)
    plan = {**(plan or {}), "received": str(work / f"received-{n}.log"), "stored": str(work / f"stored-{n}.log")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", json.dumps(plan), *args]
    err = work / f"stderr-{n}.txt"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    record = Proc(args=args, started=time.monotonic())
    if killer is not None:
        killer.arm(proc.pid, when)
    if after is not None and killer is not None:
        while killer.number == 0 and proc.poll() is None:  # the clock starts at the first model request
            time.sleep(0.01)
        try:
            proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            killer.kill()
    proc.wait(timeout=timeout)
    record.ended, record.returncode = time.monotonic(), proc.returncode
    if killer is not None:
        record.killed_at = killer.killed_at
        killer.arm(proc.pid, None)
    if record.returncode == -signal.SIGKILL and record.killed_at is None:
        record.killed_at = record.ended
    record.received, record.stored = (
        Path(plan[log]).read_text().split() if Path(plan[log]).is_file() else [] for log in ("received", "stored")
    )
    record.stderr = err.read_text(errors="replace")[-2000:]
    return record


# -- 1. kill -9 and resume --------------------------------------------------------------------------------------
def optimize_args(task: Path, optimizer: str, cache: Path, runs: Path) -> list[str]:
    return ["optimize", "--task", str(task), "--model", MODEL, "--optimizer", optimizer, "--budget-calls",
            str(OPTIMIZERS[optimizer]), "--cache", str(cache), "--runs-dir", str(runs), "-q", *BACKEND,
            *SETTINGS.get(optimizer, [])]  # fmt: skip


def essence(result: dict[str, Any]) -> dict[str, Any]:
    """What an interrupted run must reproduce."""
    return {
        "best_prompt": result["best_prompt"]["id"],
        "best_test": result["best_test"]["mean"] if result["best_test"] else None,
        "seed_test": result["baseline_test"]["mean"] if result["baseline_test"] else None,
        "best_dev": result["best_dev"]["mean"],
        "n_trials": result["n_trials"],
        "calls": result["usage"]["total"]["calls"],
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same best prompt and scores (trial counts and calls paid are compared apart)."""
    return {**a, "n_trials": None, "calls": None} == {**b, "n_trials": None, "calls": None}


def only_run_dir(runs: Path) -> Path | None:
    dirs = [d for d in runs.iterdir() if (d / "config.json").is_file()] if runs.is_dir() else []
    return dirs[0] if len(dirs) == 1 else None


def test_words() -> set[str]:
    return {str(ex.inputs["word"]) for ex in make_toy_task().test}


def is_test_request(messages: list[dict[str, Any]]) -> bool:
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    found = re.findall(r"^Word: (\S+)\s*$", user, re.MULTILINE)
    return bool(found) and found[-1] in TEST_WORDS and messages[0].get("content") == TOY_SYSTEM


TEST_WORDS = test_words()


def reference(optimizer: str, task: Path, work: Path) -> dict[str, Any]:
    """An uninterrupted run: its result, requests, how long it took and how many cache and history writes."""
    work.mkdir(parents=True)
    with toy_server() as (srv, killer, env):
        counts = work / "counts.json"
        proc = spawn(optimize_args(task, optimizer, work / "cache.sqlite", work / "runs"), env, work,
                     killer=killer, plan={"counts": str(counts)})  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"reference run of {optimizer} failed:\n{proc.stderr}")
        run_dir = only_run_dir(work / "runs")
        assert run_dir is not None
        requests = list(srv.requests)
    answered = [r for r in requests if r.answered]
    tests = [i for i, r in enumerate(requests, 1) if is_test_request(r.body["messages"])]
    ids = Counter(server_call_id(r) for r in answered)
    return {
        "optimizer": optimizer,
        "result": essence(json.loads((run_dir / "result.json").read_text())),
        "requests": len(requests),
        "answered": sum(ids.values()),
        "distinct": len(ids),
        "received_matches_server": Counter(proc.received) == ids,
        "test_requests": len(tests),
        "first_request": requests[0].started - proc.started if requests else 0.0,
        "seconds": proc.ended - proc.started,
        **json.loads(counts.read_text()),
    }


def kill_case(ref: dict[str, Any], kind: str, task: Path, work: Path, rng: random.Random) -> dict[str, Any]:
    """Kill a run as ``kind`` says, resume it until it finishes, and compare with the uninterrupted ``ref``."""
    work.mkdir(parents=True)
    optimizer = ref["optimizer"]
    cache, runs = work / "cache.sqlite", work / "runs"
    args = optimize_args(task, optimizer, cache, runs)
    where: dict[str, Any] = {}
    kill: dict[str, Any] = {}
    if kind in ("request", "twice"):
        k = rng.randint(1, ref["requests"])
        kill["when"], where["request"] = (lambda n, messages, k=k: n == k), k
    elif kind == "test":
        j = rng.randint(1, ref["test_requests"])
        seen = Counter[str]()

        def in_test(n: int, messages: list[dict[str, Any]], j: int = j) -> bool:
            seen["test"] += is_test_request(messages)
            return seen["test"] == j

        kill["when"], where["test_request"] = in_test, j
    elif kind == "time":
        t = rng.uniform(0.0, ref["seconds"] - ref["first_request"])
        kill["after"], where["seconds"] = t, round(t, 2)
    elif kind == "cache-write":
        n = rng.randint(1, ref["commits"])
        kill["plan"], where["commit"] = {"kill_commit": n}, n
    elif kind == "history-write":
        n = rng.randint(1, ref["appends"])
        kill["plan"], where["history_line"] = {"kill_append": n}, n
    procs: list[Proc] = []
    with toy_server() as (srv, killer, env):
        procs.append(spawn(args, env, work, killer=killer, **kill))
        truncated = False
        for attempt in range(6):
            if procs[-1].returncode == 0:
                break
            run_dir = only_run_dir(runs)
            if run_dir is not None and attempt == 0:
                lines = (run_dir / "history.jsonl").read_bytes() if (run_dir / "history.jsonl").is_file() else b""
                truncated = bool(lines) and not lines.endswith(b"\n")
            again: dict[str, Any] = {}
            if kind == "twice" and attempt == 0:
                k2 = rng.randint(1, max(1, ref["requests"] // 2))
                again["when"], where["resume_request"] = (lambda n, messages, k=k2: n == k), k2
            # a kill before the run directory had its config: start the command again, as a user would
            next_args = ["optimize", "--resume", str(run_dir), "-q"] if run_dir is not None else args
            procs.append(spawn(next_args, env, work, killer=killer, **again))
        requests = list(srv.requests)
    final = procs[-1]
    run_dir = only_run_dir(runs)
    result = json.loads((run_dir / "result.json").read_text()) if final.returncode == 0 and run_dir else None
    killed = [p for p in procs if p.returncode == -signal.SIGKILL]
    # each server request belongs to the process alive when it arrived (they run one after another)
    owner = [next((i for i, p in enumerate(procs) if p.started <= r.started <= p.ended), -1) for r in requests]
    paid_twice = unstored = in_flight = 0
    for i, p in enumerate(procs):
        if p.returncode != -signal.SIGKILL:
            continue
        stored = {c for q in procs[: i + 1] for c in q.stored}
        asked_after = Counter(server_call_id(r) for r, o in zip(requests, owner, strict=True) if o > i)
        paid_twice += sum(n for c, n in asked_after.items() if c in stored)
        unstored += sum(n for c, n in asked_after.items() if c in set(p.received) - stored)
        killed_at = p.killed_at or p.ended
        sent = {
            server_call_id(r)
            for r, o in zip(requests, owner, strict=True)
            if o == i and r.answered and r.ended is not None and r.ended < killed_at
        }
        in_flight += sum(n for c, n in asked_after.items() if c in sent - set(p.received))
    answered = sum(r.answered for r in requests)
    return {
        "optimizer": optimizer,
        "kind": kind,
        "where": where,
        "kills": len(killed),
        "processes": len(procs),
        "restarted_fresh": sum(p.args[:2] == ["optimize", "--task"] for p in procs[1:]),
        "truncated_history_line": truncated,
        "finished": result is not None,
        "same_result": result is not None and same(essence(result), ref["result"]),
        "same_trials": result is not None and result["n_trials"] == ref["result"]["n_trials"],
        "calls_diff": result["usage"]["total"]["calls"] - ref["result"]["calls"] if result else None,
        "result": essence(result) if result else None,
        "paid_twice": paid_twice,
        "received_not_stored": unstored,
        "in_flight": in_flight,
        "answered": answered,
        "extra_answers": answered - ref["answered"],
        "errors": [p.stderr.strip().splitlines()[-1] for p in procs if p.returncode not in (0, -signal.SIGKILL)],
    }


def kill_resume(n_kills: int, work: Path, seed: int, jobs: int) -> dict[str, Any]:
    task = write_toy_task(work / "toy")
    with ThreadPoolExecutor(jobs) as pool:
        refs = dict(zip(OPTIMIZERS, pool.map(lambda o: reference(o, task, work / f"ref-{o}"), OPTIMIZERS), strict=True))
    rng = random.Random(seed)
    names = list(OPTIMIZERS)  # case i: optimizer i mod 6, kill kind shifted by one each round
    plan = [(names[i % len(names)], KILL_KINDS[(i + i // len(names)) % len(KILL_KINDS)]) for i in range(n_kills)]
    rngs = [random.Random(rng.random()) for _ in plan]
    with ThreadPoolExecutor(jobs) as pool:
        cases = list(
            pool.map(
                lambda i: kill_case(refs[plan[i][0]], plan[i][1], task, work / f"case-{i}", rngs[i]), range(len(plan))
            )
        )
    return {"references": refs, "cases": cases}


# -- 2. concurrent writers --------------------------------------------------------------------------------------
def cache_writer(path: str, index: int, rows: int) -> None:
    """Child: write ``rows`` own keys and ``rows`` keys every writer shares (same values), reading as it goes."""
    from promptopt.models.cache import ResponseCache

    cache = ResponseCache(path)
    for start in range(0, rows, 10):
        own = {f"w{index}-{j}": {"text": f"own {index} {j}", "n": j} for j in range(start, start + 10)}
        shared = {f"shared-{j}": {"text": f"shared {j}", "n": j} for j in range(start, start + 10)}
        cache.put_many(own)
        cache.put_many(shared)
        found = cache.get_many([*own, *shared])
        if len(found) != 20:
            raise SystemExit(f"writer {index}: wrote 20 keys, read back {len(found)}")
    cache.close()


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def cache_writers(n: int, rows: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    path = work / "cache.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "cache-writer", str(path), str(i), str(rows)], stderr=subprocess.PIPE
        )
        for i in range(n)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    errors = [p.stderr.read().decode(errors="replace").strip()[-300:] for p in procs if p.stderr]  # type: ignore[union-attr]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows_found = dict(conn.execute("SELECT key, value FROM responses").fetchall())
    expected = {f"w{i}-{j}": {"text": f"own {i} {j}", "n": j} for i in range(n) for j in range(rows)}
    expected |= {f"shared-{j}": {"text": f"shared {j}", "n": j} for j in range(rows)}
    intact = sum(json.loads(rows_found[k]) == v for k, v in expected.items() if k in rows_found)
    return {
        "processes": n,
        "writes": n * rows * 2,
        "expected_keys": len(expected),
        "keys": len(rows_found),
        "intact": intact,
        "lost": len(expected) - intact,
        "integrity": integrity(path),
        "exit_codes": codes,
        "errors": [e for e in errors if e],
    }


def concurrent_runs(n: int, optimizer: str, ref: dict[str, Any], task: Path, work: Path) -> dict[str, Any]:
    """``n`` identical optimize runs started at once on one cache and one runs root."""
    work.mkdir(parents=True)
    cache, runs = work / "cache.sqlite", work / "runs"
    with toy_server() as (srv, _, env), ThreadPoolExecutor(n) as pool:
        procs = list(pool.map(lambda _: spawn(optimize_args(task, optimizer, cache, runs), env, work), range(n)))
        answered = sum(r.answered for r in srv.requests)
    dirs = sorted(d for d in runs.iterdir()) if runs.is_dir() else []
    results = [json.loads((d / "result.json").read_text()) for d in dirs if (d / "result.json").is_file()]
    with contextlib.closing(sqlite3.connect(cache)) as conn:
        keys = int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    equal = [{**essence(r), "calls": None} == {**ref["result"], "calls": None} for r in results]
    return {
        "processes": n,
        "optimizer": optimizer,
        "exit_codes": [p.returncode for p in procs],
        "run_dirs": len(dirs),
        "results": len(results),
        "same_result": sum(equal),
        "cache_keys": keys,
        "reference_keys": ref["distinct"],
        "integrity": integrity(cache),
        "answered": answered,
        "reference_answered": ref["answered"],
        "errors": [p.stderr.strip().splitlines()[-1] for p in procs if p.returncode != 0 and p.stderr.strip()],
    }


TINY_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def convert_child(target: str, go: str, arrived: str, log: str) -> None:
    """Child: wait for the start signal, then convert a tiny model into ``target`` once (as load_smollm2 does)."""
    from promptopt.models.hf import HFModel, convert_once
    from promptopt.testing.tiny import build_tiny_llama

    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} converts\n")
        deadline = time.monotonic() + 60  # hold the lock until the other process is at it (or a minute passed)
        while len(list(Path(arrived).iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        build_tiny_llama(tmp, ["the cat sat on the mat", "hello world"] * 10, chat_template=TINY_TEMPLATE)

    while not Path(go).exists():
        time.sleep(0.01)
    (Path(arrived) / str(os.getpid())).touch()
    convert_once(Path(target), {"model": "tiny", "version": 1}, build)
    print(HFModel(target, device="cpu").name, flush=True)


def conversion_race(work: Path) -> dict[str, Any]:
    """Two processes converting one model into one cache directory at the same moment."""
    work.mkdir(parents=True)
    target, go, arrived, log = work / "models" / "tiny", work / "go", work / "arrived", work / "conversions.log"
    arrived.mkdir()
    args = [str(target), str(go), str(arrived), str(log)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "convert", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    time.sleep(0.5)  # not a measurement: let both import torch before the start signal
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name != target.name)
    return {
        "processes": 2,
        "exit_codes": [p.returncode for p in procs],
        "conversions": len(log.read_text().splitlines()) if log.is_file() else 0,
        "loaded": sum(o[0].decode().strip() != "" for o in outs),
        "leftovers": [p for p in leftovers if not p.endswith(".lock")],
        "errors": [
            o[1].decode(errors="replace").strip()[-300:] for o, p in zip(outs, procs, strict=True) if p.returncode
        ],
    }


# -- 3. injected API faults -------------------------------------------------------------------------------------
ITEM = re.compile(r"^Item: (\S+)$", re.MULTILINE)


def item_responder(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Answers the fault task: the item, repeated."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    found = ITEM.findall(user)
    return found[-1] if found else ""


def write_item_task(directory: Path, n: int) -> Path:
    """A task of ``n`` test items the server answers correctly (so every wrong answer is an injected fault)."""
    (directory / "data").mkdir(parents=True)
    (directory / "template.jinja").write_text("{{ instruction }}\nItem: {{ item }}\nAnswer:", encoding="utf-8")
    for split, size in (("train", 4), ("dev", 4), ("test", n)):
        rows = [
            json.dumps({"id": f"{split}-{i}", "item": f"{split}-{i}", "target": f"{split}-{i}"}) for i in range(size)
        ]
        (directory / "data" / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {
        "name": "items",
        "instruction": "Repeat the item.",
        "template": "template.jinja",
        "data": {"files": {s: f"data/{s}.jsonl" for s in ("train", "dev", "test")}},
        "inputs": {"item": "item"},
        "target": "target",
        "metric": "exact_match",
        "parser": "first_line",
    }
    (directory / "task.yaml").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return directory / "task.yaml"


def calls_of(requests: Sequence[LoggedRequest], retries: int) -> list[list[LoggedRequest]]:
    """The attempts of each call: a request's attempts (in arrival order) end a call with an answer or after
    ``retries + 1`` attempts (a backend never has two calls of one request in flight)."""
    by_id: dict[str, list[LoggedRequest]] = {}
    for r in sorted(requests, key=lambda r: r.started):
        by_id.setdefault(server_call_id(r), []).append(r)
    calls: list[list[LoggedRequest]] = []
    for attempts in by_id.values():
        current: list[LoggedRequest] = []
        for r in attempts:
            current.append(r)
            if r.answered or len(current) == retries + 1:
                calls.append(current)
                current = []
        if current:
            calls.append(current)
    return calls


def retry_after_honoured(calls: Sequence[Sequence[LoggedRequest]], wait: float) -> dict[str, Any]:
    """How long each retry after a 429 waited (from the server's answer to the next attempt)."""
    gaps = [b.started - (a.ended or a.started) for c in calls for a, b in itertools.pairwise(c) if a.status == 429]
    return {
        "retries_after_429": len(gaps),
        "shorter_than_retry_after": sum(g < wait for g in gaps),
        "min_gap": round(min(gaps), 3) if gaps else None,
    }


RATES = FaultRates(
    rate_limit=0.06, server_error=0.06, timeout=0.03, malformed=0.05, truncated=0.05, reset=0.05,
    retry_after=0.2, slow=1.5, seed=12,
)  # fmt: skip
TIMEOUT = 0.5


def evaluate_under_faults(n: int, retries: int, work: Path) -> dict[str, Any]:
    """``promptopt evaluate`` of ``n`` items through the faulty server; failures checked example by example."""
    work.mkdir(parents=True)
    task = write_item_task(work / "items", n)
    with OpenAIServer(item_responder, fault_rates=RATES) as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        cmd = ["promptopt", "evaluate", "--task", str(task), "--split", "test", "--model", MODEL, "--api-base",
               srv.base_url + "/v1", "--no-cache", "--json", "-q", "--batch-size", "100", "--model-opt",
               f"timeout={TIMEOUT}", "--model-opt", f"max_retries={retries}", *BACKEND]  # fmt: skip
        proc = subprocess.run([shutil.which("promptopt") or "promptopt", *cmd[1:]], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        requests = list(srv.requests)
    crashed = proc.returncode not in (0, 1) or "Traceback" in proc.stderr
    out = json.loads(proc.stdout) if proc.returncode == 0 else {}
    failed_records = {r["example_id"] for r in out.get("records", []) if r.get("error_kind") == "api"}
    calls = calls_of(requests, retries)
    unrecovered = {item_responder(c[0].body["messages"], {}) for c in calls if not c[-1].answered}
    injected = Counter(r.fault for r in requests if r.fault)
    attempts = Counter(len(c) for c in calls)
    return {
        "examples": n,
        "retries": retries,
        "requests": len(requests),
        "calls": len(calls),
        "injected": {k: injected.get(k, 0) for k in FAULT_KINDS},
        "exit_code": proc.returncode,
        "crashed": crashed,
        "stderr": proc.stderr.strip()[-300:],
        "attempts_per_call": dict(sorted(attempts.items())),
        "max_attempts": max(attempts) if attempts else 0,
        "unrecovered": len(unrecovered),
        "failed_examples": len(failed_records),
        "api_errors": out.get("api_errors"),
        "usage_errors": out.get("usage", {}).get("errors"),
        "same_examples": failed_records == unrecovered,
        "accuracy": out.get("mean"),
        "retry_after": retry_after_honoured(calls, RATES.retry_after),
    }


def optimize_under_faults(retries: int, work: Path) -> dict[str, Any]:
    """``promptopt optimize --optimizer ape`` through the faulty server: it must finish and count every failure."""
    work.mkdir(parents=True)
    task = write_toy_task(work / "toy")
    killer = Killer(toy_responder)
    with OpenAIServer(killer, fault_rates=RATES) as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": srv.base_url + "/v1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
        args = [*optimize_args(task, "ape", work / "cache.sqlite", work / "runs"), "--model-opt",
                f"timeout={TIMEOUT}", "--model-opt", f"max_retries={retries}"]  # fmt: skip
        proc = spawn(args, env, work)
        requests = list(srv.requests)
    run_dir = only_run_dir(work / "runs")
    result = json.loads((run_dir / "result.json").read_text()) if run_dir and proc.returncode == 0 else None
    calls = calls_of(requests, retries)
    return {
        "retries": retries,
        "requests": len(requests),
        "injected": sum(r.fault is not None for r in requests),
        "exit_code": proc.returncode,
        "crashed": proc.returncode != 0,
        "max_attempts": max((len(c) for c in calls), default=0),
        "unrecovered": sum(not c[-1].answered for c in calls),
        "usage_errors": result["usage"]["total"]["errors"] if result else None,
        "best_test": result["best_test"]["mean"] if result else None,
        "stderr": proc.stderr.strip()[-300:] if proc.returncode else "",
    }


# -- report -----------------------------------------------------------------------------------------------------
def render(data: dict[str, Any]) -> str:
    p = data["provenance"]
    kr = data["kill_resume"]
    cases = kr["cases"]
    lines = [
        "# Faults: kill -9 and resume, concurrent writers, injected API faults",
        "",
        f"`{p['command']}` at commit `{p['commit'][:12]}`{' (uncommitted changes)' if p['dirty'] else ''}, "
        f"{p['started']}, {data['wall_minutes']:.1f} min, load {p['load_start']}. Fake task (the toy 'spell it "
        "backwards' task) through promptopt's litellm backend against the loopback OpenAI-compatible server "
        "(`promptopt.testing.openai_server`); no network beyond 127.0.0.1, no model weights.",
        "",
        "## kill -9 and resume",
        "",
        f"{sum(c['kills'] for c in cases)} kills (SIGKILL) in {len(cases)} cases over {len(kr['references'])} "
        f"optimizers; {sum(c['finished'] for c in cases)} cases finished on `--resume`; "
        f"**{sum(c['same_result'] for c in cases)} of {len(cases)} with the uninterrupted run's result** (best prompt "
        f"id, test and dev scores), {sum(c['calls_diff'] == 0 for c in cases)} with its count of calls paid and "
        f"{sum(c['same_trials'] for c in cases)} with its trial count. Answers asked again after a kill: "
        f"**{sum(c['paid_twice'] for c in cases)} that the cache had stored**, "
        f"{sum(c['received_not_stored'] for c in cases)} received but not yet stored (the kill fell between the "
        f"answer's arrival and its cache commit), {sum(c['in_flight'] for c in cases)} in flight (sent by the server "
        "before the kill, never received). `extra answers`: requests the server answered beyond the uninterrupted "
        "run's (those, and answers the server sent after the kill to the dead process); `calls`: calls paid as the "
        "resumed run counts them minus the uninterrupted run's. "
        f"{sum(c['truncated_history_line'] for c in cases)} resumes read a history.jsonl whose last line the kill "
        "had cut.",
        "",
        "Kill moments: `request` = the server kills the process when its k-th request arrives (k uniform over the "
        "uninterrupted run's requests); `time` = a uniform random time after the first request, within the "
        "uninterrupted run's model "
        "calls; `test` = at the j-th request of the held-out test evaluation; `cache-write` = at the commit of the "
        "n-th response-cache write (rows written, not committed); `history-write` = half-way through the n-th "
        "history line; `twice` = at request k, then the first resume killed too.",
        "",
        "| optimizer | budget | requests | distinct calls | cache writes | history lines | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ref in kr["references"].items():
        lines.append(
            f"| {name} | {OPTIMIZERS.get(name, '')} | {ref['requests']} | {ref['distinct']} | {ref['commits']} | "
            f"{ref['appends']} | {ref['seconds']:.1f} |"
        )
    lines += [
        "",
        "| # | optimizer | kill | at | kills | processes | same result | calls | same trials | stored, asked "
        "again | received, not stored | in flight | extra answers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(cases):
        at = ", ".join(f"{k} {v}" for k, v in c["where"].items())
        lines.append(
            f"| {i} | {c['optimizer']} | {c['kind']} | {at} | {c['kills']} | {c['processes']} | "
            f"{'yes' if c['same_result'] else 'NO'} | {c['calls_diff']:+d} | {'yes' if c['same_trials'] else 'no'} | "
            f"{c['paid_twice']} | {c['received_not_stored']} | {c['in_flight']} | {c['extra_answers']} |"
        )
    differ = [(i, c) for i, c in enumerate(cases) if not c["same_result"] or c["calls_diff"]]
    for i, c in differ:
        ref = kr["references"][c["optimizer"]]["result"]
        lines.append(f"\nCase {i}: resumed {c['result']}; uninterrupted {ref}.")
    errors = [e for c in cases for e in c["errors"]]
    if errors:
        lines += ["", "Errors: " + "; ".join(f"`{e}`" for e in errors)]
    if data.get("notes"):
        lines += ["", *(f"- {n}" for n in data["notes"])]
    cw = data["concurrent"]
    lines += [
        "",
        "## Concurrent writers",
        "",
        "| what | processes | outcome |",
        "|---|---|---|",
    ]
    for c in cw["cache"]:
        lines.append(
            f"| one response cache, {c['writes']} writes (own and shared keys, reads between) | {c['processes']} | "
            f"{c['keys']}/{c['expected_keys']} keys, {c['lost']} lost or changed, integrity `{c['integrity']}`, "
            f"exit codes {c['exit_codes']} |"
        )
    for c in cw["runs"]:
        lines.append(
            f"| `promptopt optimize --optimizer {c['optimizer']}` started at once, one cache, one runs root | "
            f"{c['processes']} | {c['run_dirs']} run dirs, {c['same_result']}/{c['processes']} results equal to a lone "
            f"run's, cache {c['cache_keys']} keys (lone run {c['reference_keys']}), integrity `{c['integrity']}`, "
            f"exit codes {c['exit_codes']}; the server answered {c['answered']} requests (lone run "
            f"{c['reference_answered']}: runs started together miss the cache together) |"
        )
    conv = cw["conversion"]
    lines.append(
        f"| first-time model conversion into one cache dir (tiny Llama) | {conv['processes']} | "
        f"{conv['conversions']} conversion(s), {conv['loaded']}/2 loaded it, leftovers {conv['leftovers'] or 'none'}, "
        f"exit codes {conv['exit_codes']} |"
    )
    faults = data["api_faults"]
    rates = ", ".join(f"{k} {getattr(RATES, k):.0%}" for k in FAULT_KINDS)
    lines += [
        "",
        "## Injected API faults",
        "",
        f"Rates per request: {rates} (429s carry Retry-After {RATES.retry_after}s; a timeout answers after "
        f"{RATES.slow}s, the client's timeout is {TIMEOUT}s). The draw depends on the request and its attempt number.",
        "",
        "| run | retries | requests | injected (429/500/timeout/malformed/truncated/reset) | crashed | attempts "
        "per call | unrecovered (server) | failed examples (result) | same examples | 429 retries sooner than "
        "Retry-After |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in faults["evaluate"]:
        inj = "/".join(str(f["injected"][k]) for k in FAULT_KINDS)
        att = ", ".join(f"{k}: {v}" for k, v in f["attempts_per_call"].items())
        ra = f["retry_after"]
        lines.append(
            f"| evaluate, {f['examples']} examples | {f['retries']} | {f['requests']} | {inj} | "
            f"{'YES' if f['crashed'] else 'no'} | {att} | {f['unrecovered']} | {f['failed_examples']} "
            f"(api_errors {f['api_errors']}, usage errors {f['usage_errors']}) | "
            f"{'yes' if f['same_examples'] else 'NO'} | {ra['shorter_than_retry_after']} of {ra['retries_after_429']} |"
        )
    o = faults["optimize"]
    lines.append(
        f"| optimize (ape), toy task | {o['retries']} | {o['requests']} | {o['injected']} in all | "
        f"{'YES' if o['crashed'] else 'no'} | at most {o['max_attempts']} | {o['unrecovered']} | usage errors "
        f"{o['usage_errors']} | {'yes' if o['usage_errors'] == o['unrecovered'] else 'NO'} | |"
    )
    total = sum(f["requests"] for f in faults["evaluate"]) + o["requests"]
    lines += ["", f"{total} requests in all."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("child", "cache-writer", "convert"):
        mode, rest = sys.argv[1], sys.argv[2:]
        if mode == "child":
            child(json.loads(rest[0]), rest[1:])
        elif mode == "cache-writer":
            cache_writer(rest[0], int(rest[1]), int(rest[2]))
        else:
            convert_child(*rest)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="kill cases (the 'twice' ones kill twice)")
    ap.add_argument("--examples", type=int, default=600, help="examples of each injected-fault evaluation")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "faults"))
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render_only:
        out.with_suffix(".md").write_text(render(json.loads(out.with_suffix(".json").read_text())))
        return
    prov = provenance()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        kr = kill_resume(args.cases, work / "kills", args.seed, args.jobs)
        task = work / "kills" / "toy" / "task.yaml"
        concurrent = {
            "cache": [cache_writers(n, 500, work / f"cache-{n}") for n in (2, 4)],
            "runs": [
                concurrent_runs(n, "fewshot", kr["references"]["fewshot"], task, work / f"runs-{n}") for n in (2, 4)
            ],
            "conversion": conversion_race(work / "conversion"),
        }
        api = {
            "evaluate": [evaluate_under_faults(args.examples, r, work / f"faults-{r}") for r in (3, 1)],
            "optimize": optimize_under_faults(2, work / "faults-optimize"),
        }
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    data = {
        "notes": previous.get("notes", []),
        "provenance": prov,
        "wall_minutes": (time.monotonic() - t0) / 60,
        "kill_resume": kr,
        "concurrent": concurrent,
        "api_faults": api,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(data))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
