"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` on a free 127.0.0.1 port.

:func:`postgres_server` creates a cluster in a temporary directory, starts it, yields its URL
(``postgresql://postgres@127.0.0.1:<port>/postgres``, trust authentication on loopback only) and stops and removes
it afterwards. The binaries come from ``$PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin`` (Debian:
``apt-get install postgresql``), or ``initdb`` on PATH. ``initdb`` refuses to run as root, so as root the cluster
runs as the unprivileged user ``nobody`` (through ``runuser``), in a directory handed to that user.

:func:`require_postgres` is for tests: the server, or a skip outside CI — with env ``CI`` set, a server that cannot
start fails the test instead (as :func:`promptopt.testing.browser.require_chromium` does for Chromium).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UNPRIVILEGED = "nobody"
"""The user a cluster runs as when this process is root."""
START_TIMEOUT = 60
"""Seconds ``pg_ctl`` waits for the server to accept connections."""


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as :data:`UNPRIVILEGED` when this process is root, else as is."""
    return ["runuser", "-u", UNPRIVILEGED, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(_as_owner(cmd), capture_output=True, text=True, check=False, timeout=START_TIMEOUT + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")


@contextmanager
def postgres_server(*, max_connections: int = 100) -> Iterator[str]:
    """Start a throwaway cluster; yield its URL; stop and delete it on exit (also after an error)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="promptopt-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, UNPRIVILEGED)
    port = free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections={max_connections} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        wait = ["-w", "-t", str(START_TIMEOUT)]
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, *wait, "start"])
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url: str) -> str:
    """A new, empty database on the server at ``url`` (so tests sharing one server do not see each other's
    tables); its URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def require_postgres() -> Iterator[str]:
    """A test fixture body: the server's URL while the fixture lives. Outside CI a server that cannot start (or a
    missing driver) skips the test; with env ``CI`` set it fails it."""
    import pytest

    try:
        import psycopg  # noqa: F401

        with postgres_server() as url:
            yield url
            return
    except (FileNotFoundError, RuntimeError, ImportError, subprocess.SubprocessError) as exc:
        message = f"no PostgreSQL server for the tests: {exc}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run: apt-get install postgresql, pip install .[test])")
    pytest.skip(message)
