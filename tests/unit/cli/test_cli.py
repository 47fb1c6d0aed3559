"""CLI behaviour: exit codes and one-line error messages for bad input; listings; evaluate/optimize on a fake model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptopt.cli.app import app

runner = CliRunner()

TASK_YAML = """\
name: toy
instruction: Repeat the word.
template: template.jinja
data:
  file: data.jsonl
  splits: {train: 4, dev: 4, test: 4}
inputs: {word: word}
target: answer
metric: exact_match
"""


def write_task(
    root: Path,
    *,
    yaml_text: str = TASK_YAML,
    template: str = "{{ instruction }}\n{{ word }}",
    rows: list[dict] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(yaml_text)
    (root / "template.jinja").write_text(template)
    rows = rows if rows is not None else [{"word": f"w{i}", "answer": f"w{i}"} for i in range(12)]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_bad_input(args: list[str], *needles: str) -> None:
    code, _, err = run(*args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_evaluate_fake_model_and_cache(tmp_path: Path) -> None:
    task = write_task(tmp_path / "toy")
    cache = tmp_path / "cache.sqlite"
    args = ["evaluate", "--task", str(task), "--model", "fake:echo", "--split", "dev", "--cache", str(cache), "-q"]
    code, out, _ = run(*args)
    assert code == 0
    assert "1.000 [95% CI 0.510–1.000]" in out  # Wilson: 4 of 4 right is not proof of 100%
    assert "model calls: 4 (0 cache hits)" in out
    code, out, _ = run(*args)
    assert code == 0
    assert "model calls: 0 (4 cache hits)" in out
    code, out, _ = run(*args, "--json")
    payload = json.loads(out)
    assert payload["mean"] == 1.0 and payload["usage"]["calls"] == 0 and len(payload["records"]) == 4


def test_optimize_baseline_writes_run_dir_and_resumes(tmp_path: Path) -> None:
    task = write_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    cache = tmp_path / "cache.sqlite"
    code, out, err = run(
        "optimize",
        "--task",
        str(task),
        "--optimizer",
        "baseline",
        "--model",
        "fake:echo",
        "--runs-dir",
        str(runs),
        "--cache",
        str(cache),
        "--budget-calls",
        "50",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    run_dir = Path(result["run_dir"])
    assert {"config.json", "history.jsonl", "usage.json", "result.json", "best_prompt"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert result["best_dev"]["mean"] == 1.0 and result["best_test"]["n"] == 4
    code, out, err = run("optimize", "--resume", str(run_dir), "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["best_prompt"]["id"] == result["best_prompt"]["id"]
    assert again["usage"]["total"]["calls"] == result["usage"]["total"]["calls"]  # replay from the cache is free


def test_listings() -> None:
    code, out, _ = run("optimizers", "list", "--json")
    names = {r["name"] for r in json.loads(out)}
    assert {"baseline", "ape", "ape-fast"} <= names
    code, out, _ = run("models", "list", "--json")
    assert code == 0 and any(r["spec"] == "smollm2" for r in json.loads(out))


# -- bad input: exit code 2 and one line naming the file/field and the fix --------------------------------
def test_malformed_yaml(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", yaml_text="name: [unclosed\ninstruction: x\n")
    assert_bad_input(["evaluate", "--task", str(task), "--model", "fake:echo"], "task.yaml", "malformed YAML", "line")


def test_template_with_undefined_variable(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", template="{{ instruction }} {{ question }}")
    assert_bad_input(
        ["evaluate", "--task", str(task), "--model", "fake:echo"], "template.jinja", "'question'", "Rename"
    )


def test_empty_split(tmp_path: Path) -> None:
    yaml_text = TASK_YAML.replace("test: 4", "test: null")  # all that is left: nothing
    task = write_task(tmp_path / "t", yaml_text=yaml_text, rows=[{"word": "a", "answer": "a"}] * 8)
    assert_bad_input(["evaluate", "--task", str(task), "--model", "fake:echo"], "task.yaml", "split 'test' is empty")


def test_missing_column(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", rows=[{"word": "a"}] * 12)
    assert_bad_input(["evaluate", "--task", str(task), "--model", "fake:echo"], "data.jsonl", "'answer'", "Fix")


def test_unknown_model_spec(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    assert_bad_input(["evaluate", "--task", str(task), "--model", "gpt4"], "model", "Valid forms", "litellm:")


def test_unknown_optimizer(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    assert_bad_input(
        ["optimize", "--task", str(task), "--optimizer", "apee", "--model", "fake:echo", "--runs-dir", str(tmp_path)],
        "Unknown optimizer 'apee'",
        "Did you mean 'ape'",
    )


def test_unknown_task() -> None:
    assert_bad_input(["evaluate", "--task", "no-such-task", "--model", "fake:echo"], "Unknown task")


def test_exit_code_from_a_real_process(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", template="{{ instruction }} {{ question }}")
    proc = subprocess.run(
        [sys.executable, "-m", "promptopt.cli", "evaluate", "--task", str(task), "--model", "fake:echo"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "question" in proc.stderr


@pytest.mark.parametrize("bad", ["--budget-calls=0", "--set=n_prompts=0"])
def test_bad_options(tmp_path: Path, bad: str) -> None:
    task = write_task(tmp_path / "t")
    code, _, err = run("optimize", "--task", str(task), "--model", "fake:echo", "--runs-dir", str(tmp_path), bad)
    assert code == 2, err


def test_optimize_select_option(tmp_path: Path) -> None:
    task = write_task(tmp_path / "toy")
    base = ["optimize", "--task", str(task), "--optimizer", "baseline", "--model", "fake:echo", "--no-test"]
    base += ["--runs-dir", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache.sqlite")]
    code, out, err = run(*base, "--select", "significant", "--json")
    assert code == 0, err
    assert json.loads(Path(json.loads(out)["run_dir"], "config.json").read_text())["select"] == "significant"
    code, _, err = run(*base, "--select", "luck")
    assert code == 2 and "select" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_are_one_line_and_help_still_works() -> None:
    code, out, err = run("evaluate", "--task", "x", "--limit", "many")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--limit" in err and "--help" in err
    code, out, _ = run("evaluate", "--help")
    assert code == 0 and "--max-errors" in out
    code, out, err = run()
    assert code == 2 and "optimize" in out and not err.strip()  # no command: the help text, as before
