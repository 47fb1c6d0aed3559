"""Loading tasks from task.yaml: valid layouts, and every bad input naming the file, the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promptopt import ConfigError, DataError, TemplateError, UnknownComponentError, load_task
from promptopt.testing import make_toy_task, write_toy_task

TEMPLATE = "{{ instruction }}\n\nReview: {{ text }}\nSentiment:"


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def rows(n: int, *, start: int = 0) -> list[dict]:
    return [{"text": f"review number {i}", "label": i % 2} for i in range(start, start + n)]


def spec(**overrides) -> dict:
    base = {
        "name": "tiny",
        "instruction": "Is the review positive or negative?",
        "template": "template.jinja",
        "data": {"file": "data/all.jsonl", "splits": {"train": 4, "dev": 3, "test": None}, "seed": 1},
        "inputs": {"text": "text"},
        "target": "label",
        "labels": {"0": "negative", "1": "positive"},
        "metric": "accuracy",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_task(tmp_path: Path, spec_: dict | str, *, template: str = TEMPLATE, data: list[dict] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "template.jinja").write_text(template)
    jsonl(tmp_path / "data" / "all.jsonl", rows(10) if data is None else data)
    path = tmp_path / "task.yaml"
    path.write_text(spec_ if isinstance(spec_, str) else yaml.safe_dump(spec_, sort_keys=False))
    return path


# -- valid tasks -------------------------------------------------------------------------------------------


def test_jsonl_one_file_cut_into_seeded_splits(tmp_path):
    path = write_task(tmp_path, spec())
    task = load_task(path)
    assert task.name == "tiny"
    assert task.source == str(path)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 4, "dev": 3, "test": 3}
    ids = [ex.id for split in task.splits.values() for ex in split]
    assert len(set(ids)) == 10  # disjoint splits covering the file
    assert task.labels == ("negative", "positive")
    assert task.is_classification
    assert task.parser.name == "label_set"  # default for a labelled task
    assert task.metric.name == "accuracy"
    assert {ex.target for ex in task.train} <= {"negative", "positive"}  # raw 0/1 mapped through labels
    assert load_task(tmp_path).splits == task.splits  # a directory works too; same seed, same splits


def test_split_seed_changes_the_cut(tmp_path):
    a = load_task(write_task(tmp_path / "a", spec()))
    b = load_task(write_task(tmp_path / "b", spec(data={**spec()["data"], "seed": 2})))
    assert [e.id for e in a.dev] != [e.id for e in b.dev]


def test_tsv_files_per_split(tmp_path):
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):
        lines = ["sentence\tlabel"] + [f"sentence {split} {i}\t{i % 2}" for i in range(n)]
        (tmp_path / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "template.jinja").write_text("{{ instruction }} {{ sentence }}")
    (tmp_path / "task.yaml").write_text(
        "instruction: Classify.\n"
        "template: template.jinja\n"
        "data:\n  files: {train: train.tsv, dev: dev.tsv, test: test.tsv}\n"
        "target: label\n"
        "labels: {'0': negative, '1': positive}\n"
        'generation: {max_tokens: 4, stop: ["\\n"]}\n'
    )
    task = load_task(tmp_path / "task.yaml")
    assert task.name == tmp_path.name  # defaults to the directory name
    assert [ex.id for ex in task.dev] == ["dev-0", "dev-1"]
    assert task.dev[1].inputs == {"sentence": "sentence dev 1"}
    assert task.dev[1].target == "positive"
    assert task.generation.max_tokens == 4
    assert task.generation.stop == ("\n",)


def test_dev_and_test_cut_from_train_when_only_train_has_a_file(tmp_path):
    jsonl(tmp_path / "train.jsonl", rows(10))
    (tmp_path / "template.jinja").write_text(TEMPLATE)
    s = spec(data={"files": {"train": "train.jsonl"}, "splits": {"dev": 3, "test": 2}})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(s))
    task = load_task(tmp_path / "task.yaml")
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 5, "dev": 3, "test": 2}
    ids = [ex.id for split in task.splits.values() for ex in split]
    assert len(set(ids)) == 10


def test_list_targets_and_metadata_columns(tmp_path):
    data = [{"id": f"q{i}", "text": "t", "label": ["a b", "c"], "source": "web"} for i in range(10)]
    task = load_task(write_task(tmp_path, spec(labels=None, metric="f1"), data=data))
    ex = next(iter(task.train))
    assert ex.target == ("a b", "c")
    assert ex.meta == {"source": "web"}
    assert ex.id.startswith("q")
    assert task.parser.name == "first_line"


def test_toy_task_round_trips_through_task_yaml(tmp_path):
    loaded = load_task(write_toy_task(tmp_path / "toy"))
    built = make_toy_task()
    assert loaded.splits == built.splits
    assert loaded.seed_prompt().id == built.seed_prompt().id


# -- bad inputs -------------------------------------------------------------------------------------------


def raises(path: Path, exc_type: type[Exception], *fragments: str) -> str:
    with pytest.raises(exc_type) as info:
        load_task(path)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def test_malformed_yaml(tmp_path):
    path = write_task(tmp_path, "instruction: x\ntemplate: [unclosed\ndata: {}\n")
    raises(path, ConfigError, str(path), "malformed YAML at line", "Fix the syntax")


def test_yaml_that_is_not_a_mapping(tmp_path):
    raises(write_task(tmp_path, "- just\n- a list\n"), ConfigError, "must be a YAML mapping")


def test_unknown_top_level_key(tmp_path):
    path = write_task(tmp_path, spec(metrc="accuracy"))
    with pytest.raises(ConfigError) as info:
        load_task(path)
    assert info.value.field == "metrc"
    assert info.value.source == str(path)
    assert "unknown key(s) ['metrc']" in str(info.value)
    assert "allowed:" in str(info.value) and "'metric'" in str(info.value)


def test_unknown_data_key(tmp_path):
    raises(write_task(tmp_path, spec(data={"fiels": {}})), ConfigError, "field 'data'", "unknown key(s) ['fiels']")


@pytest.mark.parametrize("key", ["instruction", "template", "data", "target"])
def test_missing_required_key(tmp_path, key):
    s = spec()
    del s[key]
    path = write_task(tmp_path, s)
    raises(path, ConfigError, str(path), f"field '{key}'", "is required")


def test_template_file_not_found(tmp_path):
    raises(write_task(tmp_path, spec(template="nope.jinja")), ConfigError, "field 'template'", "'nope.jinja' not found")


def test_template_syntax_error_names_the_template_file(tmp_path):
    raises(write_task(tmp_path, spec(), template="{{ text "), TemplateError, "template.jinja", "syntax error on line 1")


def test_template_variable_not_in_data(tmp_path):
    path = write_task(tmp_path, spec(), template="{{ instruction }} {{ question }}")
    raises(path, TemplateError, "template.jinja", "'question' not provided by the data", "available: text", "inputs:")


def test_template_variable_not_in_data_columns_without_inputs_mapping(tmp_path):
    path = write_task(tmp_path, spec(inputs=None), template="{{ instruction }} {{ question }}")
    raises(path, DataError, "all.jsonl", "row 1 has no column 'question'", "columns: ['label', 'text']", "inputs")


def test_missing_target_column(tmp_path):
    path = write_task(tmp_path, spec(target="sentiment"))
    raises(path, DataError, "all.jsonl", "no column 'sentiment'", "'target' mapping")


def test_target_not_in_labels(tmp_path):
    data = rows(10)
    data[6]["label"] = 2  # mislabeled
    path = write_task(tmp_path, spec(), data=data)
    raises(path, DataError, "all.jsonl", "row 7 has target '2'", "not one of the labels ['0', '1']", "labels")


def test_empty_data_file(tmp_path):
    path = write_task(tmp_path, spec(), data=[])
    raises(path, DataError, "all.jsonl", "has no rows")


def test_missing_data_file(tmp_path):
    path = write_task(tmp_path, spec(data={"file": "data/none.jsonl"}))
    raises(path, DataError, "none.jsonl", "data file not found")


def test_invalid_jsonl_line(tmp_path):
    path = write_task(tmp_path, spec())
    (tmp_path / "data" / "all.jsonl").write_text('{"text": "a", "label": 0}\n{not json}\n')
    raises(path, DataError, "all.jsonl", "line 2 is not valid JSON")


def test_empty_split(tmp_path):
    path = write_task(tmp_path, spec(data={"file": "data/all.jsonl", "splits": {"train": 6, "dev": 4}}))
    raises(path, DataError, str(path), "split 'test' is empty", "data.splits.test")


def test_bad_split_size(tmp_path):
    path = write_task(tmp_path, spec(data={"file": "data/all.jsonl", "splits": {"train": 0}}))
    raises(path, ConfigError, "field 'data.splits.train'", "positive integer")


def test_unknown_file_extension(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    path = write_task(tmp_path, spec(data={"file": "data.txt"}))
    raises(path, DataError, "data.txt", "cannot tell the format", "data.reader")


@pytest.mark.parametrize(
    ("key", "value", "suggestion"),
    [("metric", "acuracy", "accuracy"), ("parser", "first_lin", "first_line")],
)
def test_unknown_metric_or_parser_did_you_mean(tmp_path, key, value, suggestion):
    path = write_task(tmp_path, spec(**{key: value}))
    with pytest.raises(UnknownComponentError) as info:
        load_task(path)
    msg = str(info.value)
    assert f"Did you mean '{suggestion}'?" in msg
    assert str(path) in msg
    assert f"field '{key}'" in msg
    assert isinstance(info.value, ConfigError)


def test_bad_generation_setting(tmp_path):
    path = write_task(tmp_path, spec(generation={"max_token": 4}))
    raises(path, ConfigError, "field 'generation'", "max_token", "allowed: max_tokens, stop")


def test_unknown_task_name_suggests():
    with pytest.raises(UnknownComponentError, match="Unknown task 'definitely-not-a-task-xyz'"):
        load_task("definitely-not-a-task-xyz")


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            {"file": "data/all.jsonl", "splits": {"train": 4, "dev": 3, "test": 20}},
            ("field 'data.splits.test'", "asks for 20 examples but 3 of the 10 are left after train 4, dev 3"),
        ),
        ({"file": "data/all.jsonl", "splits": {"train": 11}}, ("data.splits.train", "the data has 10")),
        (
            {"files": {"train": "data/all.jsonl"}, "splits": {"dev": 8, "test": 8}},
            ("data.splits.test", "asks for 8 examples but 2 of the 10 are left after dev 8", "at most 2"),
        ),
    ],
)
def test_a_split_larger_than_the_data_is_refused_not_cut_short(tmp_path, data, fragments):
    raises(write_task(tmp_path, spec(data=data)), DataError, "task.yaml", *fragments)


def test_errors_from_nested_settings_name_the_task_file(tmp_path):
    path = write_task(tmp_path, spec(generation={"max_tokens": 0}))
    raises(path, ConfigError, str(path), "field 'generation.max_tokens'", ">= 1")
    path = write_task(tmp_path, spec(parser={"name": "regex", "pattern": "("}))
    raises(path, ConfigError, str(path), "field 'parser.pattern'", "invalid regex")


def test_a_directory_without_task_yaml(tmp_path):
    raises(tmp_path, ConfigError, str(tmp_path), "no task.yaml", "field 'task'")


def test_malformed_yaml_is_one_line(tmp_path):
    path = write_task(tmp_path, "name: x\ninstruction: [a, b\n")
    with pytest.raises(ConfigError) as info:
        load_task(path)
    assert "\n" not in str(info.value) and "line 3" in str(info.value)
