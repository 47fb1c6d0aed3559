"""Open a local HTML file in headless Chromium, the way a user sees it, with no Python dependency beyond the browser.

:func:`dump_dom` returns the DOM after the page loaded and its inline scripts ran (so a page can write its own checks
into an element, as the reports do with ``<pre id="render-check">``: :func:`render_check`); :func:`screenshot`
saves a PNG. :func:`require_chromium` is for tests: the browser, or a skip outside CI — in CI (env ``CI`` set) a
missing browser fails the test instead. Debian: ``apt-get install chromium``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT = 120.0
"""Seconds before a browser that hangs is killed (a guard, not a measurement)."""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or ``$CHROMIUM`` if set; None if there is none."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((p for p in map(shutil.which, NAMES) if p), None)


def require_chromium() -> str:
    """The browser for a test: skips when it is missing, unless env ``CI`` is set — then the test fails."""
    import pytest

    found = find_chromium()
    if found:
        return found
    message = "chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run)")
    pytest.skip(message)


def _run(args: list[str], *, browser: str | None) -> subprocess.CompletedProcess[str]:
    exe = browser or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="promptopt-chromium-") as profile:
        cmd = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",  # its own profile: parallel runs do not share a lock
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def dump_dom(page: str | Path, *, browser: str | None = None) -> str:
    """The page's DOM (serialised HTML) after it loaded and its scripts ran."""
    return _run(["--dump-dom", Path(page).resolve().as_uri()], browser=browser).stdout


def screenshot(
    page: str | Path, out: str | Path, *, size: tuple[int, int] = (1100, 2400), browser: str | None = None
) -> Path:
    """A PNG of the page at window ``size`` (width, height), written to ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", Path(page).resolve().as_uri()], browser=browser)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def element_text(dom: str, element_id: str) -> str | None:
    """The text of the element with ``id`` in a DOM dump (a leaf element; entities decoded), or None."""
    m = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', dom, re.DOTALL)
    return html.unescape(m.group(2)) if m else None


def render_check(page: str | Path, *, browser: str | None = None) -> dict[str, Any]:
    """What a report page's own script found once loaded (``<pre id="render-check">``): ``errors`` (JavaScript
    errors), ``charts`` (per SVG chart: ``id``, ``points``, ``elements``, ``width``, ``height``) and ``sections``."""
    text = element_text(dump_dom(page, browser=browser), "render-check")
    if not text:
        raise RuntimeError(f"{page}: no render check in the page's DOM (its script did not run)")
    data: dict[str, Any] = json.loads(text)
    return data
