"""The bad-input catalogue: every user-supplied file and option, given a bad value, exits 2 with one line that
names the file or field and says what to do.

Each case builds what it needs under ``tmp_path`` and returns the command line; every needle must be in the
single error line (first the file or field, then the words of the fix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.unit.cli.test_cli import TASK_YAML, run, write_task

Setup = Callable[[Path], list[str]]
DATA = "data:\n  file: data.jsonl\n  splits: {train: 4, dev: 4, test: 4}"
ROWS = "".join(json.dumps({"word": f"w{i}", "answer": f"w{i}"}) + "\n" for i in range(12))


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    needles: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables, each a path relative to tmp_path."""


def task_with(**files: str | bytes) -> Callable[[Path], Path]:
    """The toy task with some of its files (task.yaml, template.jinja, data.jsonl) replaced."""

    def make(tmp: Path) -> Path:
        root = write_task(tmp / "t")
        for name, content in files.items():
            path = root / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return root

    return make


def yaml_with(old: str, new: str) -> Callable[[Path], Path]:
    """The toy task with ``old`` replaced by ``new`` in its task.yaml."""
    assert old in TASK_YAML, old
    return task_with(**{"task.yaml": TASK_YAML.replace(old, new)})


def evaluate(make: Callable[[Path], Path] | None = None, *extra: str) -> Setup:
    """``promptopt evaluate`` of the task ``make`` builds (default: the toy task) on the fake model."""
    build = make or task_with()
    return lambda tmp: ["evaluate", "--task", str(build(tmp)), "--model", "fake:echo", "-q", *extra]


def optimize(*extra: str, optimizer: str = "baseline", runs: str = "runs", cache: str = "c.sqlite") -> Setup:
    def setup(tmp: Path) -> list[str]:
        args = ["optimize", "--task", str(write_task(tmp / "t")), "--optimizer", optimizer, "--model", "fake:echo"]
        return [*args, "-q", "--runs-dir", str(tmp / runs), "--cache", str(tmp / cache), *extra]

    return setup


def with_file(name: str, text: str, then: Setup) -> Setup:
    """Write ``text`` to ``tmp/name`` first."""

    def setup(tmp: Path) -> list[str]:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
        return then(tmp)

    return setup


def preset(text: str) -> Setup:
    return with_file("opt/p.yaml", text, lambda tmp: optimize(optimizer=str(tmp / "opt" / "p.yaml"))(tmp))


def prompt_file(text: str) -> Setup:
    return with_file("p.json", text, lambda tmp: [*evaluate()(tmp), "--prompt", str(tmp / "p.json")])


def corrupt_run(name: str, edit: Callable[[str], str]) -> Setup:
    """A finished baseline run whose ``name`` file is rewritten by ``edit``, given to --resume."""

    def setup(tmp: Path) -> list[str]:
        code, out, err = run(*optimize("--json")(tmp))
        assert code == 0, err
        path = Path(json.loads(out)["run_dir"]) / name
        path.write_text(edit(path.read_text()))
        return ["optimize", "--resume", str(path.parent), "-q"]

    return setup


def fixed(*args: str) -> Setup:
    return lambda tmp: list(args)


CASES = [
    # -- task.yaml ---------------------------------------------------------------------------------------------
    Case("yaml-malformed", evaluate(task_with(**{"task.yaml": "name: [unclosed\n"})), ("task.yaml", "line 2", "Fix")),
    Case("yaml-not-mapping", evaluate(task_with(**{"task.yaml": "- a\n- b\n"})), ("task.yaml", "mapping")),
    Case("yaml-not-utf8", evaluate(task_with(**{"task.yaml": b"\xff\xfe"})), ("task.yaml", "UTF-8")),
    Case("yaml-unknown-key", evaluate(yaml_with("metric:", "metrik:")), ("task.yaml", "'metrik'", "allowed")),
    Case(
        "yaml-missing-key",
        evaluate(yaml_with("instruction: Repeat the word.\n", "")),
        ("task.yaml", "instruction", "add it"),
    ),
    Case(
        "task-is-a-data-file",
        lambda tmp: ["evaluate", "--task", str(write_task(tmp / "t") / "data.jsonl")],
        ("data.jsonl", "YAML"),
    ),
    Case(
        "task-unknown-name",
        fixed("evaluate", "--task", "no-such-task", "--model", "fake:echo"),
        ("--task", "no-such-task", "Pass"),
    ),
    Case("task-dir-without-yaml", lambda tmp: ["evaluate", "--task", str(tmp)], ("--task", "no task.yaml", "give")),
    Case(
        "template-not-a-string",
        evaluate(yaml_with("template.jinja", "[1, 2]")),
        ("task.yaml", "'template'", "must name"),
    ),
    Case(
        "template-missing-file",
        evaluate(yaml_with("template.jinja", "nope.jinja")),
        ("task.yaml", "'nope.jinja' not found"),
    ),
    Case(
        "template-syntax-error",
        evaluate(task_with(**{"template.jinja": "{{ word "})),
        ("template.jinja", "line 1", "Fix"),
    ),
    Case(
        "template-undefined-variable",
        evaluate(task_with(**{"template.jinja": "{{ instruction }} {{ question }}"})),
        ("template.jinja", "'question'", "Rename"),
    ),
    Case(
        "labels-wrong-type", evaluate(yaml_with("metric:", "labels: 5\nmetric:")), ("task.yaml", "'labels'", "must be")
    ),
    Case("labels-empty", evaluate(yaml_with("metric:", "labels: []\nmetric:")), ("task.yaml", "'labels'", "non-empty")),
    Case(
        "target-not-a-label",
        evaluate(yaml_with("metric: exact_match", "labels: [yes, no]")),
        ("data.jsonl", "labels", "Fix"),
    ),
    Case(
        "inputs-wrong-type",
        evaluate(yaml_with("inputs: {word: word}", "inputs: 5")),
        ("task.yaml", "'inputs'", "must be"),
    ),
    Case(
        "target-wrong-type",
        evaluate(yaml_with("target: answer", "target: [a, b]")),
        ("task.yaml", "'target'", "column name"),
    ),
    Case(
        "generation-unknown-key",
        evaluate(yaml_with("metric:", "generation: {max_token: 5}\nmetric:")),
        ("task.yaml", "generation", "allowed"),
    ),
    Case(
        "generation-max-tokens-0",
        evaluate(yaml_with("metric:", "generation: {max_tokens: 0}\nmetric:")),
        ("task.yaml", "max_tokens", ">= 1"),
    ),
    Case(
        "metric-unknown",
        evaluate(yaml_with("metric: exact_match", "metric: exact_mach")),
        ("task.yaml", "'metric'", "Did you mean"),
    ),
    Case(
        "parser-unknown",
        evaluate(yaml_with("metric:", "parser: nope\nmetric:")),
        ("task.yaml", "'parser'", "Available"),
    ),
    Case(
        "parser-bad-regex",
        evaluate(yaml_with("metric:", "parser: {name: regex, pattern: '('}\nmetric:")),
        ("task.yaml", "parser.pattern"),
    ),
    # -- data files and splits -----------------------------------------------------------------------------------
    Case("data-not-mapping", evaluate(yaml_with(DATA, "data: data.jsonl")), ("task.yaml", "'data'", "'file'")),
    Case(
        "data-unknown-key",
        evaluate(yaml_with("  file: data.jsonl", "  fil: data.jsonl")),
        ("task.yaml", "'fil'", "allowed"),
    ),
    Case(
        "data-file-missing",
        evaluate(yaml_with("file: data.jsonl", "file: gone.jsonl")),
        ("gone.jsonl", "Check the path"),
    ),
    Case("data-file-empty", evaluate(task_with(**{"data.jsonl": ""})), ("data.jsonl", "no rows", "Point")),
    Case(
        "data-bad-json-line", evaluate(task_with(**{"data.jsonl": ROWS + "{oops\n"})), ("data.jsonl", "line 13", "JSON")
    ),
    Case("data-not-utf8", evaluate(task_with(**{"data.jsonl": b"\xff\xfe\x00"})), ("data.jsonl", "UTF-8")),
    Case(
        "data-missing-column",
        evaluate(task_with(**{"data.jsonl": '{"word": "a"}\n' * 12})),
        ("data.jsonl", "'answer'", "Fix"),
    ),
    Case(
        "data-unknown-extension",
        evaluate(yaml_with("file: data.jsonl", "file: data.xlsx")),
        ("data.xlsx", "data.reader"),
    ),
    Case(
        "data-unknown-reader",
        evaluate(yaml_with("  file: data.jsonl", "  file: data.jsonl\n  reader: xml")),
        ("task.yaml", "'xml'", "Available"),
    ),
    Case(
        "data-bad-reader-option",
        evaluate(yaml_with("  file: data.jsonl", "  file: data.jsonl\n  options: {sep: ';'}")),
        ("task.yaml", "data.options", "remove it"),
    ),
    Case(
        "split-size-not-int",
        evaluate(yaml_with("train: 4", "train: many")),
        ("task.yaml", "data.splits.train", "positive integer"),
    ),
    Case(
        "split-test-larger-than-data",
        evaluate(yaml_with("test: 4", "test: 40")),
        ("task.yaml", "data.splits.test", "40", "at most 4"),
    ),
    Case(
        "split-dev-larger-than-data",
        evaluate(yaml_with("dev: 4", "dev: 9")),
        ("task.yaml", "data.splits.dev", "9", "at most 8"),
    ),
    Case(
        "split-train-larger-than-data",
        evaluate(yaml_with("train: 4", "train: 13")),
        ("task.yaml", "data.splits.train", "has 12"),
    ),
    Case(
        "split-nothing-left",
        evaluate(task_with(**{"data.jsonl": '{"word": "a", "answer": "a"}\n' * 8})),
        ("task.yaml", "data.splits.test", "shrink the other splits"),
    ),
    Case(
        "files-same-file-twice",
        evaluate(yaml_with(DATA, "data:\n  files: {train: data.jsonl, dev: data.jsonl}")),
        ("task.yaml", "data.files", "use 'file'"),
    ),
    Case(
        "files-split-without-size",
        evaluate(yaml_with(DATA, "data:\n  files: {train: data.jsonl}")),
        ("task.yaml", "data.splits.dev", "give it a file or a size"),
    ),
    Case(
        "files-cut-larger-than-train",
        evaluate(yaml_with(DATA, "data:\n  files: {train: data.jsonl}\n  splits: {dev: 4, test: 20}")),
        ("task.yaml", "data.splits.test", "20", "at most 8"),
    ),
    Case(
        "files-split-larger-than-its-file",
        with_file(
            "t/dev.jsonl",
            ROWS,
            with_file(
                "t/test.jsonl",
                ROWS,
                evaluate(
                    yaml_with(
                        DATA,
                        "data:\n  files: {train: data.jsonl, dev: dev.jsonl, test: test.jsonl}\n  splits: {dev: 30}",
                    )
                ),
            ),
        ),
        ("task.yaml", "data.splits.dev", "the data has 12"),
    ),
    # -- optimizer options and presets -----------------------------------------------------------------------------
    Case("set-no-equals", optimize("--set", "n_prompts", optimizer="ape"), ("--set", "key=value")),
    Case("set-unparsable-value", optimize("--set", "shots=[1,", optimizer="fewshot"), ("--set", "quote it")),
    Case("set-unknown-key", optimize("--set", "n_promts=3", optimizer="ape"), ("'n_promts'", "allowed", "'n_prompts'")),
    Case(
        "set-int-not-a-number",
        optimize("--set", "n_prompts=abc", optimizer="ape"),
        ("'n_prompts'", "must be an integer", '"abc"'),
    ),
    Case(
        "set-int-is-a-float", optimize("--set", "n_prompts=2.5", optimizer="ape"), ("'n_prompts'", "must be an integer")
    ),
    Case("set-below-minimum", optimize("--set", "n_prompts=0", optimizer="ape"), ("'n_prompts'", ">= 1")),
    Case(
        "set-float-not-a-number",
        optimize("--set", "temperature=hot", optimizer="ape"),
        ("'temperature'", "must be a number"),
    ),
    Case(
        "set-bool-not-a-bool",
        optimize("--set", "critique=maybe", optimizer="feedback"),
        ("'critique'", "true or false"),
    ),
    Case(
        "set-literal-not-a-choice", optimize("--set", "controller=pd", optimizer="feedback"), ("'controller'", '"pid"')
    ),
    Case("set-tuple-of-ints", optimize("--set", "shots=[a, b]", optimizer="fewshot"), ("'shots'", "list of integers")),
    Case(
        "set-optional-int", optimize("--set", "step_size=big", optimizer="pe2"), ("'step_size'", "an integer or null")
    ),
    Case("set-string-is-a-number", optimize("--set", "embedder=3", optimizer="fewshot"), ("'embedder'", "a string")),
    Case("optimizer-unknown", optimize(optimizer="apee"), ("'apee'", "Did you mean 'ape'")),
    Case("optimizer-show-unknown", fixed("optimizers", "show", "apee"), ("'apee'", "Did you mean")),
    Case("optimizer-needs-trainable-model", optimize(optimizer="soft-prompt"), ("--model", "hf:")),
    Case("preset-malformed", preset("optimizer: [ape\n"), ("p.yaml", "line 2", "Fix the syntax")),
    Case("preset-no-optimizer", preset("config: {}\n"), ("p.yaml", "'optimizer'", "optimizer: <name>")),
    Case("preset-unknown-key", preset("optimizer: ape\nconfg: {}\n"), ("p.yaml", "'confg'", "allowed")),
    Case("preset-unknown-optimizer", preset("optimizer: apee\n"), ("p.yaml", "'optimizer'", "Did you mean 'ape'")),
    Case("preset-config-not-mapping", preset("optimizer: ape\nconfig: [1]\n"), ("p.yaml", "'config'", "mapping")),
    Case(
        "preset-bad-type", preset("optimizer: ape\nconfig: {n_prompts: many}\n"), ("p.yaml", "'n_prompts'", "integer")
    ),
    # -- run options ---------------------------------------------------------------------------------------------
    Case("optimize-without-task", fixed("optimize", "--model", "fake:echo"), ("--task", "promptopt optimize --task")),
    Case("unknown-option", evaluate(task_with(), "--bogus"), ("--bogus", "--help")),
    Case("missing-required-option", fixed("evaluate"), ("--task", "--help")),
    Case("budget-calls-not-int", optimize("--budget-calls", "abc"), ("--budget-calls", "integer", "--help")),
    Case("budget-calls-zero", optimize("--budget-calls", "0"), ("--budget-calls", "positive")),
    Case("budget-tokens-zero", optimize("--budget-tokens", "0"), ("--budget-tokens", "positive")),
    Case("budget-cost-negative", optimize("--budget-cost", "-1"), ("--budget-cost", "positive")),
    Case("budget-seconds-zero", optimize("--budget-seconds", "0"), ("--budget-seconds", "positive")),
    Case(
        "budget-too-small",
        optimize("--budget-calls", "5", optimizer="ape"),
        ("--budget-calls", "at least --budget-calls 16"),
    ),
    Case("max-errors-not-a-limit", evaluate(task_with(), "--max-errors", "lots"), ("--max-errors", "20%", "a count")),
    Case("max-errors-over-100%", optimize("--max-errors", "150%"), ("--max-errors", "20%")),
    Case("select-unknown", optimize("--select", "luck"), ("--select", "best, significant")),
    Case("mode-unknown", evaluate(task_with(), "--mode", "guess"), ("--mode", "auto, score, generate")),
    Case(
        "mode-score-without-labels", evaluate(task_with(), "--mode", "score"), ("--mode", "labels", "use mode generate")
    ),
    Case("split-unknown", evaluate(task_with(), "--split", "val"), ("--split", "'dev'")),
    Case("limit-zero", evaluate(task_with(), "--limit", "0"), ("--limit", ">= 1")),
    Case("batch-size-zero", evaluate(task_with(), "--batch-size", "0"), ("--batch-size", ">= 1")),
    Case(
        "spread-formats-zero",
        lambda tmp: ["spread", "--task", str(write_task(tmp / "t")), "--model", "fake:echo", "--formats", "0"],
        ("--formats", ">= 1"),
    ),
    Case("tasks-show-unknown", fixed("tasks", "show", "no-such-task"), ("--task", "no-such-task")),
    # -- models --------------------------------------------------------------------------------------------------
    Case("model-unknown-spec", evaluate(task_with(), "--model", "gpt4"), ("--model", "Valid forms")),
    Case("proposer-unknown-spec", optimize("--proposer", "gpt4", optimizer="ape"), ("--proposer", "Valid forms")),
    Case("model-unknown-fake-mode", evaluate(task_with(), "--model", "fake:wise"), ("--model", "fake:echo")),
    Case("model-opt-no-equals", evaluate(task_with(), "--model-opt", "verbose"), ("--model-opt", "key=value")),
    Case("model-opt-unknown", evaluate(task_with(), "--model-opt", "colour=red"), ("--model-opt", "'colour'")),
    # -- prompt files --------------------------------------------------------------------------------------------
    Case(
        "prompt-missing",
        lambda tmp: [*evaluate()(tmp), "--prompt", str(tmp / "p.json")],
        ("p.json", "give an export directory"),
    ),
    Case("prompt-bad-json", prompt_file("{oops"), ("p.json", "not valid JSON")),
    Case("prompt-not-a-prompt", prompt_file('{"x": 1}'), ("p.json", "'instruction'", "written by promptopt")),
    # -- run directories -----------------------------------------------------------------------------------------
    Case(
        "resume-no-dir",
        lambda tmp: ["optimize", "--resume", str(tmp / "nope")],
        ("nope", "no config.json", "give a run directory"),
    ),
    Case("resume-config-garbage", corrupt_run("config.json", lambda s: "garbage"), ("config.json", "start a new run")),
    Case(
        "resume-config-truncated",
        corrupt_run("config.json", lambda s: s[: len(s) // 2]),
        ("config.json", "JSON", "restore"),
    ),
    Case("resume-config-not-object", corrupt_run("config.json", lambda s: "[]"), ("config.json", "restore")),
    Case(
        "resume-config-missing-key",
        corrupt_run("config.json", lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "seed"})),
        ("config.json", "'seed'", "restore"),
    ),
    Case(
        "resume-config-bad-setting",
        corrupt_run("config.json", lambda s: s.replace('"optimizer_config": {}', '"optimizer_config": {"x": 1}')),
        ("config.json", "'x'", "allowed"),
    ),
    Case(
        "resume-history-garbage-line",
        corrupt_run("history.jsonl", lambda s: "garbage\n" + s),
        ("history.jsonl", "line 1", "restore"),
    ),
    Case(
        "resume-history-not-a-record",
        corrupt_run("history.jsonl", lambda s: '{"trial": 0}\n' + s),
        ("history.jsonl", "line 1", "no key"),
    ),
    Case("resume-usage-garbage", corrupt_run("usage.json", lambda s: "{"), ("usage.json", "Delete it")),
    Case("runs-dir-is-a-file", with_file("runs", "", optimize()), ("--runs-dir", "Not a directory", "writable")),
    Case("runs-dir-under-a-file", with_file("f", "", optimize(runs="f/runs")), ("--runs-dir", "writable")),
    # -- the response cache --------------------------------------------------------------------------------------
    Case(
        "cache-is-a-directory",
        lambda tmp: [*evaluate()(tmp), "--cache", str(tmp)],
        ("--cache", "is a directory", "file path"),
    ),
    Case(
        "cache-under-a-file", with_file("f", "", optimize(cache="f/c.sqlite")), ("--cache", "c.sqlite", "writable path")
    ),
    Case("cache-not-sqlite", with_file("c.sqlite", "not a database" * 100, optimize()), ("--cache", "not a database")),
    Case(
        "cache-default-home-is-a-file",
        with_file("home", "", evaluate()),
        ("--cache", "PROMPTOPT_HOME"),
        {"PROMPTOPT_HOME": "home"},
    ),
]

ROOT_ONLY = [  # a read-only parent stops only non-root users
    Case("runs-dir-read-only", optimize(runs="ro/runs"), ("--runs-dir", "Permission denied", "writable")),
    Case("cache-read-only", optimize(cache="ro/c.sqlite"), ("--cache", "writable path")),
]


def check(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, rel in case.env.items():
        monkeypatch.setenv(name, str(tmp / rel))
    code, _, err = run(*case.setup(tmp))
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check(case, tmp_path, monkeypatch)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("case", ROOT_ONLY, ids=[c.id for c in ROOT_ONLY])
def test_read_only_places(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        check(case, tmp_path, monkeypatch)
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_the_catalogue_has_40_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40
