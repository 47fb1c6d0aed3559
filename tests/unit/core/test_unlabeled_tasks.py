"""``unlabeled_train: true`` in task.yaml: train rows need no target and any there is dropped; dev and test stay
labeled; a wrong value or an unlabeled dev example is an error naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.unit.cli.test_cli import run
from tests.unit.core.test_taskfile import jsonl, rows, spec, write_task

from promptopt import ConfigError, DataError, load_task
from promptopt.testing.unlabeled import write_unlabeled_task


def files_task(tmp_path: Path, *, train_labels: bool, **overrides: object) -> Path:
    train = rows(6) if train_labels else [{"text": r["text"]} for r in rows(6)]
    jsonl(tmp_path / "data" / "train.jsonl", train)
    jsonl(tmp_path / "data" / "dev.jsonl", rows(3, start=10))
    jsonl(tmp_path / "data" / "test.jsonl", rows(3, start=20))
    files = {s: f"data/{s}.jsonl" for s in ("train", "dev", "test")}
    return write_task(tmp_path, spec(data={"files": files}, **overrides))


def test_train_without_a_target_column(tmp_path: Path) -> None:
    task = load_task(files_task(tmp_path, train_labels=False, unlabeled_train=True))
    assert len(task.unlabeled_train) == len(task.train) == 6
    assert all(ex.labeled for split in ("dev", "test") for ex in task.splits[split])
    assert task.train[0].inputs == {"text": "review number 0"}


def test_train_targets_are_dropped_when_present(tmp_path: Path) -> None:
    task = load_task(files_task(tmp_path, train_labels=True, unlabeled_train=True))
    assert all(ex.target is None for ex in task.train)


def test_without_the_flag_a_missing_target_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 1 has no column 'label'") as err:
        load_task(files_task(tmp_path, train_labels=False))
    assert "train.jsonl" in str(err.value)


def test_unlabeled_rows_cut_into_dev_are_refused(tmp_path: Path) -> None:
    data = [{"text": f"review number {i}"} for i in range(10)]
    path = write_task(tmp_path, spec(unlabeled_train=True), data=data)
    with pytest.raises(DataError, match=r"in split .dev. has no target\. Only train may be unlabeled") as err:
        load_task(path)
    assert str(path) in str(err.value)


def test_the_flag_must_be_a_boolean(tmp_path: Path) -> None:
    path = files_task(tmp_path, train_labels=False, unlabeled_train="yes")
    with pytest.raises(ConfigError, match="must be true or false") as err:
        load_task(path)
    assert err.value.field == "unlabeled_train"


def test_cli_optimize_on_an_unlabeled_task(tmp_path: Path) -> None:
    """``unsupervised`` runs end to end from the command line; a labeled optimizer refuses with the fix."""
    task = write_unlabeled_task(tmp_path / "animal")
    assert yaml.safe_load(task.read_text())["unlabeled_train"] is True
    common = ["--task", str(task), "--model", "fake:echo", "--runs-dir", str(tmp_path / "runs"), "--json"]
    code, out, err = run("optimize", *common, "--optimizer", "unsupervised", "--budget-calls", "300")
    assert code == 0, err
    result = json.loads(out)
    assert result["optimizer"] == "unsupervised" and result["best_test"]["n"] == 6
    code, _, err = run("optimize", *common, "--optimizer", "fewshot")
    assert code == 2
    assert "unlabeled train examples" in err and "--optimizer unsupervised" in err
