"""A persistent response cache (SQLite) keyed by the canonical request.

The key is a SHA-256 of the model's name and the request's canonical JSON (messages, decoding
parameters, sample index). API keys and endpoints are never part of it. Responses with an error are not
cached, so a retry after an outage calls the model again.

Safe across threads and processes: WAL mode (readers never block the writer), a 30 s busy timeout for writers
that meet another's write, and one transaction per :meth:`ResponseCache.put_many`, so a process killed mid-write
leaves the cache as it was before that write. Commits are not fsynced (``synchronous=NORMAL``): a killed process
loses nothing it committed; only a power loss or OS crash can drop the last commits (never corrupt the file).
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
        same instant may both pay for it. The PostgreSQL cache (:mod:`promptopt.models.cache_pg`) holds real
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
    database (:class:`~promptopt.models.cache_pg.PostgresResponseCache`, shared by workers), or a cache as is.

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
    from promptopt.models.cache_pg import PostgresResponseCache, redact

    try:
        return PostgresResponseCache(url)
    except Exception as exc:  # psycopg's errors: the driver is an optional import
        if type(exc).__module__.split(".")[0] != "psycopg":
            raise
        raise ConfigError(
            f"cannot use {redact(url)} as the response cache ({exc}); give the URL of a reachable PostgreSQL database.",
            field="cache",
        ) from None
