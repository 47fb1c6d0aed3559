"""Importing promptopt stays light: no torch, transformers, litellm, optuna or peft until a backend needs them.

The checks run in one fresh interpreter, importing the modules in order.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "litellm", "optuna", "peft", "accelerate", "datasets")

MODULES = [
    "promptopt",
    "promptopt.optimizers",
    "promptopt.testing",
    "promptopt.models",
    "promptopt.models.fake",
    "promptopt.cli.app",
]
FAKE_RUN = (
    "import promptopt\n"
    "from promptopt.testing import make_toy_task, toy_model\n"
    "promptopt.optimize(make_toy_task(), 'baseline', toy_model(), cache=False)\n"
    "promptopt.get_model('fake:echo')\n"
)


PROBE = """
import importlib, importlib.util, json, sys
heavy, modules, fake_run = json.loads(sys.argv[1])
def loaded():
    return sorted(m for m in heavy if m in sys.modules)
out = {}
for m in modules:  # in order: a module is blamed only for what it loads first
    if importlib.util.find_spec(m) is not None:
        importlib.import_module(m)
        out["import " + m] = loaded()
exec(fake_run)
out[fake_run] = loaded()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def heavy_loaded() -> dict[str, list[str]]:
    """statement -> heavy modules loaded once it has run, in one fresh interpreter (this one has imported
    who knows what)."""
    arg = json.dumps([HEAVY, MODULES, FAKE_RUN])
    proc = subprocess.run([sys.executable, "-c", PROBE, arg], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_import_loads_no_heavy_dependency(module, heavy_loaded):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    assert heavy_loaded[f"import {module}"] == []


def test_a_fake_run_loads_no_heavy_dependency(heavy_loaded):
    assert heavy_loaded[FAKE_RUN] == []


def test_every_public_name_resolves():
    import promptopt

    for name in promptopt.__all__:
        assert getattr(promptopt, name) is not None, name
