"""Every task shipped in tasks/ loads, has sound splits, renders, and scores its own answers as correct."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from promptopt.core.task import SPLITS, Task
from promptopt.core.taskfile import load_task

TASKS_DIR = Path(__file__).resolve().parents[3] / "tasks"
BBH = [
    "boolean_expressions", "causal_judgement", "date_understanding", "formal_fallacies",
    "logical_deduction_three_objects", "navigate", "object_counting", "sports_understanding", "web_of_lies",
]  # fmt: skip
II = [
    "antonyms", "cause_and_effect", "first_word_letter", "larger_animal", "letters_list", "negation", "num_to_verbal",
    "orthography_starts_with", "sentiment", "singular_to_plural", "sum", "synonyms", "translation_en-fr",
    "word_in_context",
]  # fmt: skip
SHIPPED = ["sst2", "trec", "esnli", "gsm8k", "multiarith", *(f"bbh_{t}" for t in BBH), *(f"ii_{t}" for t in II)]
CLASSIFICATION = {"sst2", "trec", "esnli", *(f"bbh_{t}" for t in BBH if t != "object_counting")}
II_METRICS = {"orthography_starts_with": "exact_set", "synonyms": "contains"}


@cache
def task(name: str) -> Task:
    return load_task(name)


def test_the_shipped_task_set() -> None:
    found = {p.parent.name for p in TASKS_DIR.glob("*/task.yaml")}
    assert found == set(SHIPPED)
    readme = (TASKS_DIR / "README.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in readme for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_from_the_repository(name: str) -> None:
    t = task(name)
    assert t.name == name
    assert Path(t.source).resolve() == TASKS_DIR / name / "task.yaml"


@pytest.mark.parametrize("name", SHIPPED)
def test_splits_are_non_empty_and_disjoint(name: str) -> None:
    splits = task(name).splits
    assert set(splits) == set(SPLITS) and all(splits[s] for s in SPLITS)
    ids = [ex.id for s in SPLITS for ex in splits[s]]
    assert len(ids) == len(set(ids)), "an example id occurs twice"
    contents = [tuple(sorted((k, str(v).strip()) for k, v in ex.inputs.items())) for s in SPLITS for ex in splits[s]]
    assert len(contents) == len(set(contents)), "an input occurs twice (within or across splits)"
    assert len(splits["train"]) <= 100 and 10 <= len(splits["dev"]) <= 100


@pytest.mark.parametrize("name", SHIPPED)
def test_labels_metric_and_parser_are_consistent(name: str) -> None:
    t = task(name)
    assert t.is_classification == (name in CLASSIFICATION)
    examples = [ex for s in SPLITS for ex in t.splits[s]]
    if t.labels:
        assert len(set(t.labels)) == len(t.labels) and t.parser.name == "label_set" and t.metric.name == "accuracy"
        assert {a for ex in examples for a in ex.answers} == set(t.labels), "a label never occurs in the data"
        for label in t.labels:  # label_set finds each label, alone and inside a sentence (incl. "(A)")
            assert t.parser(label) == label
            assert t.parser(f"The answer is {label}.") == label
    else:
        assert t.parser.name != "label_set"
    if name.startswith("ii_"):
        assert t.metric.name == II_METRICS.get(name[3:], "exact_match")
    if name in ("gsm8k", "multiarith", "bbh_object_counting"):
        assert (t.metric.name, t.parser.name) == ("numeric", "last_number")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_reference_answer_scores_one(name: str) -> None:
    t = task(name)
    for ex in (ex for s in SPLITS for ex in t.splits[s]):
        for answer in ex.answers:
            assert t.metric(answer, ex) == 1.0, (ex.id, answer)
        parsed = t.parser(ex.answer)
        assert parsed is not None and t.metric(parsed, ex) == 1.0, (ex.id, ex.answer, parsed)


@pytest.mark.parametrize("name", SHIPPED)
def test_seed_prompt_renders_a_dev_example(name: str) -> None:
    t = task(name)
    ex = t.dev[0]
    system, user = t.seed_prompt().render(ex)
    assert system.role == "system" and user.role == "user"
    assert user.content.startswith(t.instruction)
    assert all(str(value).strip() in user.content for value in ex.inputs.values())
    assert "{{" not in user.content and "{%" not in user.content

    demos = t.train[:2]
    with_demos = replace(t.seed_prompt(), demos=demos).render_user(ex.inputs)
    assert all(d.answer in with_demos for d in demos)
    assert with_demos.endswith(user.content.splitlines()[-1])  # the query (answer cue) comes last


@pytest.mark.parametrize("name", SHIPPED)
def test_generation_settings(name: str) -> None:
    gen = task(name).generation
    if name in ("gsm8k", "multiarith"):
        assert gen.max_tokens >= 256 and gen.stop == ("\nQuestion:",)
    else:
        assert gen.max_tokens <= 64 and gen.stop == ("\n",)


def test_vendored_data_has_licences_and_sources() -> None:
    data = TASKS_DIR / "_data"
    for dataset in (d for d in data.iterdir() if d.is_dir()):
        assert (dataset / "SOURCE.md").is_file(), dataset
        assert any(p.name.startswith(("LICENSE", "DATA_LICENSE")) for p in dataset.iterdir()), dataset
    assert sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) < 4_000_000
    for path in (data / "bbh").glob("*.json"):
        assert "canary GUID" in path.read_text(encoding="utf-8"), path
