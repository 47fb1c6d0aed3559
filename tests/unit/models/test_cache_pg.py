"""The PostgreSQL response cache (on a throwaway server): SQLite's keys and semantics, and claims so that workers
sharing it never pay for one request twice — also when they ask it at the same moment, or one of them dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from promptopt import Budget, ConfigError, FakeModel, ModelClient
from promptopt.core.messages import Message
from promptopt.models.base import GenerationRequest
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import PostgresResponseCache, open_cache, redact, request_key, sqlalchemy_url


def req(text: str) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),))


def client(cache, model=None) -> ModelClient:
    return ModelClient(model or FakeModel(), cache=cache, budget=BudgetTracker(budget=Budget()))


def test_open_cache_takes_a_postgres_url(postgres_url: str) -> None:
    cache = open_cache(postgres_url)
    assert isinstance(cache, PostgresResponseCache)
    cache.put_many({"k1": {"text": "a"}, "k2": {"text": "b"}})
    cache.put_many({"k1": {"text": "a2"}})  # replaced, as in SQLite
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": {"text": "a2"}, "k2": {"text": "b"}}
    assert len(cache) == 2
    cache.close()


def test_a_second_client_is_answered_from_the_shared_cache(postgres_url: str) -> None:
    model = FakeModel()
    first = client(open_cache(postgres_url), model)
    first.generate([req("one"), req("two"), req("one")])
    assert len(model.requests) == 2  # the in-batch duplicate is answered once
    again = client(open_cache(postgres_url), model)
    out = again.generate([req("two"), req("one")])
    assert len(model.requests) == 2 and all(c.cached for c in out)
    assert again.budget.total.cache_hits == 2 and again.budget.total.calls == 0
    keys = open_cache(postgres_url).get_many([request_key("fake", req("one").key())])
    assert keys and next(iter(keys.values()))["text"] == "one"


def test_errors_are_not_cached_and_their_claim_is_released(postgres_url: str) -> None:
    cache = open_cache(postgres_url)
    assert isinstance(cache, PostgresResponseCache)
    failing = client(cache, FakeModel(fail=lambda r: "down"))
    assert failing.generate([req("x")])[0].error == "down"
    assert len(cache) == 0
    other = open_cache(postgres_url)
    assert isinstance(other, PostgresResponseCache)
    mine, found = other.claim([request_key("fake", req("x").key())])
    assert mine and not found  # nobody holds it any more


WORKER = textwrap.dedent(
    """
    import sys, time
    from promptopt import Budget, FakeModel, ModelClient
    from promptopt.core.messages import Message
    from promptopt.models.base import GenerationRequest
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.cache import open_cache

    url, log, start = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def answer(r):
        with open(log, "a") as f:
            f.write(r.messages[-1].content + "\\n")
        time.sleep(0.3)
        return r.messages[-1].content

    c = ModelClient(FakeModel(fn=answer), cache=open_cache(url), budget=BudgetTracker(budget=Budget()))
    time.sleep(max(0.0, start - time.time()))
    out = c.generate([GenerationRequest(messages=(Message("user", f"q{i}"),)) for i in range(6)])
    assert [o.text for o in out] == [f"q{i}" for i in range(6)], out
    print(c.budget.total.calls, c.budget.total.cache_hits)
    """
)


def test_workers_asking_the_same_requests_at_once_pay_each_once(postgres_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    start = time.time() + 2.0  # all four send at the same instant, after their imports
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, postgres_url, str(log), str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    calls = log.read_text().split()
    assert sorted(calls) == [f"q{i}" for i in range(6)]  # six requests, each paid by exactly one worker
    paid = [tuple(map(int, o.split())) for o in outs]
    assert sum(c for c, _ in paid) == 6 and all(c + h == 6 for c, h in paid)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from promptopt.models.cache import open_cache
    cache = open_cache(sys.argv[1])
    mine, _ = cache.claim([sys.argv[2]])
    assert mine
    print("claimed", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_workers_claims_are_freed_at_once(postgres_url: str) -> None:
    key = request_key("fake", req("held").key())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, postgres_url, key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        cache = open_cache(postgres_url)
        assert isinstance(cache, PostgresResponseCache)
        assert cache.claim([key]) == (set(), {})  # held by the other worker
        os.kill(holder.pid, signal.SIGKILL)
        began = time.monotonic()
        assert cache.wait([key]) == {}  # released without an answer: claim it again
        assert time.monotonic() - began < 10
        model = FakeModel()
        assert client(cache, model).generate([req("held")])[0].text == "held" and len(model.requests) == 1
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"postgresql://u:\*\*\*@127.0.0.1:9/x"):
        open_cache("postgresql://u:secret@127.0.0.1:9/x")


def test_urls() -> None:
    assert sqlalchemy_url("postgresql://a@h/db") == "postgresql+psycopg://a@h/db"
    assert sqlalchemy_url("postgresql+psycopg2://a@h/db") == "postgresql+psycopg2://a@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
