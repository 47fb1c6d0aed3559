"""A persistent response cache (SQLite, or PostgreSQL to share it) keyed by the canonical request.

The key is a SHA-256 of the model's name and the request's canonical JSON (messages, decoding
parameters, sample index). API keys and endpoints are never part of it. Responses with an error are not
cached, so a retry after an outage calls the model again.

Safe across threads and processes: WAL mode (readers never block the writer), a 30 s busy timeout for writers
that meet another's write, and one transaction per :meth:`ResponseCache.put_many`, so a process killed mid-write
leaves the cache as it was before that write. Commits are not fsynced (``synchronous=NORMAL``): a killed process
loses nothing it committed; only a power loss or OS crash can drop the last commits (never corrupt the file).

On PostgreSQL (:class:`PostgresResponseCache`, for workers on several processes or machines): the same keys
and values in one table, ``promptopt_responses(key, value)``, chosen by a URL: ``cache="postgresql://user@host/db"``
(``--cache`` on the command line). Needs the ``postgres`` extra (psycopg 3).

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

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError

BUSY_TIMEOUT = 30.0
"""Seconds a write waits for another process's write to finish."""


def promptopt_home() -> Path:
    """``$PROMPTOPT_HOME`` or ``~/.cache/promptopt``: converted models and the default response cache."""
    return Path(os.environ.get("PROMPTOPT_HOME") or Path.home() / ".cache" / "promptopt")


def default_cache_path() -> Path:
    return promptopt_home() / "responses.sqlite"


def is_postgres_url(spec: object) -> bool:
    """Whether ``spec`` is a PostgreSQL URL (``postgresql://``, ``postgresql+psycopg://``, ``postgres://``)."""
    return isinstance(spec, str) and spec.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def request_key(model_name: str, request_key: Mapping[str, Any]) -> str:
    payload = json.dumps({"model": model_name, **request_key}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """Key → JSON response store. ``ResponseCache(":memory:")`` keeps it in process only."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT)
        if self.path != ":memory:":
            self._wal()
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._conn.commit()

    def _wal(self) -> None:
        """Switch to WAL mode. Processes opening a new cache file at the same instant contend for it, and SQLite
        reports that as "database is locked" at once instead of waiting (four workers starting together hit it):
        retry for up to :data:`BUSY_TIMEOUT` seconds, like any other busy write."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
                found.update((k, json.loads(v)) for k, v in self._conn.execute(q, chunk))
        return found

    def put_many(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        if not items:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)
            self._conn.commit()

    def claim(self, keys: Iterable[str]) -> tuple[set[str], dict[str, dict[str, Any]]]:
        """Claim missing keys before calling the model for them: (keys to answer, answers found meanwhile).

        A SQLite cache is one machine's: it claims every key, so two processes asking the same request at the
        same instant may both pay for it. The PostgreSQL cache (:class:`PostgresResponseCache`) holds real
        claims, so workers sharing it never do."""
        return set(keys), {}

    def release(self, keys: Iterable[str]) -> None:
        """Give up the claims on ``keys`` (answered and stored, or failed)."""

    def wait(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Wait for keys another process claimed (none here: :meth:`claim` claims them all)."""
        return {}

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_cache(cache: ResponseCache | str | Path | bool) -> ResponseCache | None:
    """``True`` → the default cache file, ``False`` → none, a path → that file, a ``postgresql://`` URL → that
    database (:class:`PostgresResponseCache`, shared by workers), or a cache as is.

    A path that cannot hold the cache (a directory, an unwritable place, a file that is not SQLite) is a
    :class:`ConfigError` naming it.
    """
    if isinstance(cache, ResponseCache):
        return cache
    if cache is False:
        return None
    if is_postgres_url(cache):
        return _open_postgres(str(cache))
    path = default_cache_path() if cache is True else Path(cache)
    where = " (the default cache; set PROMPTOPT_HOME or pass a cache path)" if cache is True else ""
    if path.is_dir():
        raise ConfigError(
            f"{path} is a directory{where}; give the cache a file path, e.g. {path / 'responses.sqlite'}.",
            field="cache",
        )
    try:
        return ResponseCache(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"cannot use {path} as the response cache ({exc}){where}; give a writable path to a new or existing "
            "promptopt cache file.",
            field="cache",
        ) from None


def _open_postgres(url: str) -> ResponseCache:
    try:
        return PostgresResponseCache(url)
    except Exception as exc:  # psycopg's errors: the driver is an optional import
        if type(exc).__module__.split(".")[0] != "psycopg":
            raise
        raise ConfigError(
            f"cannot use {redact(url)} as the response cache ({exc}); give the URL of a reachable PostgreSQL database.",
            field="cache",
        ) from None


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
