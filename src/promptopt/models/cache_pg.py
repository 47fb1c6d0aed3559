"""The response cache on PostgreSQL, shared by workers on several processes or machines.

Same keys and values as the SQLite :class:`~promptopt.models.cache.ResponseCache` (one table,
``promptopt_responses(key, value)``), chosen by a URL: ``cache="postgresql://user@host/db"`` (``--cache`` on the
command line). Needs the ``postgres`` extra (psycopg 3).

Never paying twice, also for two workers asking the same request at the same moment: before calling the model
for a miss, a worker *claims* its key with a session-level advisory lock (``pg_try_advisory_lock`` on the key's
first 64 bits). A worker that finds a key claimed by another does not call the model for it: it waits
(polling the table) until the answer is there, or the claim is released without one (the holder's call failed —
errors are never cached — or the holder died: PostgreSQL drops a session's locks when its connection closes, so a
``kill -9`` frees them at once), and then claims it itself. Claims are released right after the answers are
stored, before waiting on anyone else's, so two workers never wait on each other. Two threads of one process
share a session (advisory locks are re-entrant there), so the claim deduplicates across processes only; the
client already answers duplicates within one batch once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from promptopt.core._imports import require
from promptopt.models.cache import ResponseCache, is_postgres_url

POLL = 0.02
"""Seconds between looks at a key another worker has claimed."""
SCHEMA_LOCK = 0x70726F6D70746F70
"""Advisory lock serialising ``CREATE TABLE`` when several workers open a new database at once."""


def libpq_url(url: str) -> str:
    """``url`` without a SQLAlchemy driver suffix (``postgresql+psycopg://`` → ``postgresql://``)."""
    return "postgresql" + url[url.index(":") :]


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL for SQLAlchemy (Optuna's storage) on psycopg 3; other URLs as given."""
    if not is_postgres_url(url) or "+" in url.split(":", 1)[0]:
        return url
    return "postgresql+psycopg" + url[url.index(":") :]


def redact(url: str) -> str:
    """``url`` without its password, for config files and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def lock_id(key: str) -> int:
    """The advisory lock of a cache key: its first 64 bits as a signed bigint."""
    return int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)


class PostgresResponseCache(ResponseCache):
    """Key → JSON response store in a PostgreSQL database, with cross-process claims (see the module)."""

    def __init__(self, url: str) -> None:
        psycopg = require("psycopg", extra="postgres", feature="a PostgreSQL response cache")
        self.url = url
        self.path = redact(url)
        self._lock = threading.Lock()
        self._pg = psycopg.connect(libpq_url(url), autocommit=True)
        with self._pg.transaction():
            self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._pg.execute(
                "CREATE TABLE IF NOT EXISTS promptopt_responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        if not keys:
            return {}
        with self._lock:
            rows = self._pg.execute("SELECT key, value FROM promptopt_responses WHERE key = ANY(%s)", (keys,))
            return {k: json.loads(v) for k, v in rows.fetchall()}

    def put_many(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        if not items:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._lock, self._pg.transaction(), self._pg.cursor() as cur:
            cur.executemany(
                "INSERT INTO promptopt_responses (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                rows,
            )

    def claim(self, keys: Iterable[str]) -> tuple[set[str], dict[str, dict[str, Any]]]:
        """Claim the missing ``keys``: (the keys this process now holds and must answer, the answers another
        worker stored meanwhile). Keys in neither are claimed by another worker: :meth:`wait` for them."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set(), {}
        with self._lock:
            rows = self._pg.execute(
                "SELECT k FROM unnest(%s::text[], %s::bigint[]) AS t(k, i) WHERE pg_try_advisory_lock(i)",
                (keys, [lock_id(k) for k in keys]),
            ).fetchall()
        held = {r[0] for r in rows}
        found = self.get_many(held)  # answered between the caller's lookup and the claim
        self.release(found)
        return held - set(found), found

    def release(self, keys: Iterable[str]) -> None:
        ids = [lock_id(k) for k in keys]
        if ids:
            with self._lock:
                self._pg.execute("SELECT pg_advisory_unlock(i) FROM unnest(%s::bigint[]) AS t(i)", (ids,))

    def wait(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Wait for keys other workers hold: their answers, once each key is answered or released without one
        (those are left out: claim them again)."""
        waiting, found = set(keys), {}
        while waiting:
            got = self.get_many(waiting)
            found.update(got)
            waiting -= set(got)
            free, more = self.claim(waiting)  # a claim we get back: its holder gave up (failed call or died)
            self.release(free)
            found.update(more)
            waiting -= free | set(more)
            if waiting:
                time.sleep(POLL)
        return found

    def __len__(self) -> int:
        with self._lock:
            row = self._pg.execute("SELECT COUNT(*) FROM promptopt_responses").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._pg.close()
