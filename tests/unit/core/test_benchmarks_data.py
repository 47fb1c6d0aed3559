"""Benchmark readers (promptopt.core.benchmarks_data) on small synthetic files in their original layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptopt.core.benchmarks_data import (
    format_number,
    read_bbh,
    read_esnli,
    read_gsm8k,
    read_instruction_induction,
    read_multiarith,
)
from promptopt.core.exceptions import DataError
from promptopt.core.readers import READERS
from promptopt.core.taskfile import load_task


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def ii_file(tmp_path: Path, examples: Any, *, name: str = "task", folder: str = "execute") -> Path:
    return write_json(tmp_path / folder / f"{name}.json", {"metadata": {"num_examples": 0}, "examples": examples})


def assert_data_error(fn: Any, path: Path, match: str, **kwargs: Any) -> None:
    with pytest.raises(DataError, match=match) as info:
        fn(path, **kwargs)
    assert info.value.source is not None and Path(info.value.source).name in (path.name, path.parent.name)


def test_named_readers_are_registered() -> None:
    assert READERS.get("bbh") is read_bbh
    assert READERS.get("instruction_induction") is read_instruction_induction
    assert READERS.get("esnli") is read_esnli
    assert READERS.get("gsm8k") is read_gsm8k
    assert READERS.get("multiarith") is read_multiarith


@pytest.mark.parametrize(("value", "text"), [(18.0, "18"), (18, "18"), (2.5, "2.5"), (-3.0, "-3"), (0.125, "0.125")])
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


# -- BBH -----------------------------------------------------------------------------------------------
def bbh_file(tmp_path: Path, examples: Any) -> Path:
    return write_json(tmp_path / "navigate.json", {"canary": "BENCHMARK DATA ... canary GUID x", "examples": examples})


def test_bbh_rows(tmp_path: Path) -> None:
    path = bbh_file(
        tmp_path, [{"input": "Q1\nOptions:\n- Yes\n- No", "target": "Yes"}, {"input": "Q2", "target": "No"}]
    )
    assert read_bbh(path) == [
        {"id": "navigate-0", "input": "Q1\nOptions:\n- Yes\n- No", "target": "Yes"},
        {"id": "navigate-1", "input": "Q2", "target": "No"},
    ]


def test_bbh_drops_repeated_and_ambiguous_inputs(tmp_path: Path) -> None:
    rows = [
        {"input": "a", "target": "Yes"},
        {"input": "b", "target": "No"},
        {"input": "a", "target": "Yes"},  # repeat, same answer: keep the first copy
        {"input": "c", "target": "Yes"},
        {"input": "c", "target": "No"},  # repeat, other answer: ambiguous, drop every copy
    ]
    path = bbh_file(tmp_path, rows)
    assert [r["id"] for r in read_bbh(path)] == ["navigate-0", "navigate-1"]
    assert len(read_bbh(path, dedupe=False)) == 5


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "invalid JSON"),
        ('{"canary": "x"}', "examples"),
        ('{"examples": {"1": {}}}', "examples"),
        ('{"examples": ["text"]}', "example 0 is not a JSON object"),
        ('{"examples": [{"input": "q"}]}', "example 0 has no non-empty text field 'target'"),
        ('{"examples": [{"input": "", "target": "Yes"}]}', "'input'"),
    ],
)
def test_bbh_malformed(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert_data_error(read_bbh, path, match)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    assert_data_error(read_bbh, tmp_path / "absent.json", "not found")


# -- Instruction Induction -----------------------------------------------------------------------------
def test_ii_plain_rows_keep_extra_fields(tmp_path: Path) -> None:
    path = ii_file(tmp_path, {"1": {"input": "3 4", "output": "7", "x": 3, "y": 4}}, name="sum")
    assert read_instruction_induction(path) == [{"id": "execute/sum-1", "input": "3 4", "output": "7", "x": 3, "y": 4}]


@pytest.mark.parametrize("key", ["possible_translations", "possible_outputs", "other_rhymes"])
def test_ii_answer_lists_become_list_targets_with_output_first(tmp_path: Path, key: str) -> None:
    path = ii_file(tmp_path, {"1": {"input": "time", "output": "temps", key: ["", "heure", "temps", "fois"]}})
    [row] = read_instruction_induction(path)
    assert row["output"] == ["temps", "heure", "fois"]  # canonical first, no blanks, no repeats
    assert key not in row


def test_ii_cause_and_effect(tmp_path: Path) -> None:
    pairs = {str(i): {"cause": f"Cause {i}.", "effect": f"Effect {i}."} for i in range(1, 41)}
    path = ii_file(tmp_path, pairs, name="cause_and_effect", folder="induce")
    rows = read_instruction_induction(path)
    assert rows == read_instruction_induction(path)  # seeded: the same order every time
    for i, row in enumerate(rows, 1):
        assert row["output"] == f"Cause {i}."
        assert row["input"] in (
            f"Sentence 1: Cause {i}. Sentence 2: Effect {i}.",
            f"Sentence 1: Effect {i}. Sentence 2: Cause {i}.",
        )
        assert set(row) == {"id", "input", "output"}
    cause_first = [r["input"].startswith("Sentence 1: Cause") for r in rows]
    assert 5 < sum(cause_first) < 35  # both orders occur
    assert [r["input"] for r in read_instruction_induction(path, seed=1)] != [r["input"] for r in rows]
    # the order depends on the pair, not on its position in the file
    reversed_path = ii_file(tmp_path, dict(reversed(pairs.items())), name="cause_and_effect", folder="other")
    assert {r["input"] for r in read_instruction_induction(reversed_path)} == {r["input"] for r in rows}


def test_ii_common_concept(tmp_path: Path) -> None:
    example = {
        "concept": "involve going up.",
        "items": ["rock climbing", "elevators", "helicopters"],
        "all_common_concepts": ["involve vertical movement.", "involve going up."],
    }
    [row] = read_instruction_induction(ii_file(tmp_path, {"2": example}, name="common_concept"))
    assert row == {
        "id": "execute/common_concept-2",
        "input": "rock climbing, elevators, helicopters",
        "output": ["involve going up.", "involve vertical movement."],
    }


def test_ii_examples_as_a_list(tmp_path: Path) -> None:
    rows = read_instruction_induction(ii_file(tmp_path, [{"input": "a", "output": "b"}], name="t"))
    assert rows == [{"id": "execute/t-1", "input": "a", "output": "b"}]


def test_ii_drops_repeated_inputs(tmp_path: Path) -> None:
    examples = {
        "1": {"input": "a", "output": "x"},
        "2": {"input": "a", "output": "x"},
        "3": {"input": "b", "output": "y"},
    }
    path = ii_file(tmp_path, examples)
    assert [r["id"] for r in read_instruction_induction(path)] == ["execute/task-1", "execute/task-3"]
    assert len(read_instruction_induction(path, dedupe=False)) == 3


@pytest.mark.parametrize(
    ("examples", "match"),
    [
        ({"1": {"output": "x"}}, "example '1' has no non-empty text field 'input'"),
        ({"1": {"input": "a"}}, "'output'"),
        ({"1": "text"}, "example '1' is not a JSON object"),
        ({"1": {"input": "a", "output": "b", "possible_translations": "b"}}, "'possible_translations' must be a list"),
        ({"1": {"input": "a", "output": "b", "possible_outputs": ["", " "]}}, "'possible_outputs' must be a list"),
        ({"1": {"cause": "c."}}, "'input'"),
        ({"1": {"cause": "c.", "effect": 3}}, "'effect'"),
        ({"1": {"items": [], "all_common_concepts": ["x"]}}, "'items' and 'all_common_concepts'"),
        ("examples", "Instruction-Induction format"),
    ],
)
def test_ii_malformed(tmp_path: Path, examples: Any, match: str) -> None:
    assert_data_error(read_instruction_induction, ii_file(tmp_path, examples), match)


def test_ii_not_an_object(tmp_path: Path) -> None:
    assert_data_error(read_instruction_induction, write_json(tmp_path / "t.json", [1, 2]), "Instruction-Induction")


# -- e-SNLI --------------------------------------------------------------------------------------------
def esnli_dir(tmp_path: Path, split: str = "test", **overrides: str) -> Path:
    d = tmp_path / "eSNLI"
    d.mkdir(exist_ok=True)
    files = {
        "s1": "A man plays guitar . \nTwo dogs run . \n",
        "s2": "A man plays music . \nCats sleep . \n",
        "labels": "entailment\ncontradiction\n",
        "preproc1_expl_1": "playing guitar is playing music .\ndogs are not cats .",  # no trailing newline
        "preproc1_expl_2": "guitar makes music .\n",
        **overrides,
    }
    for name, text in files.items():
        (d / f"{name}.{split}").write_text(text, encoding="utf-8")
    return d


def test_esnli_rows_from_directory(tmp_path: Path) -> None:
    rows = read_esnli(esnli_dir(tmp_path))
    assert rows == [
        {"id": "test-0", "premise": "A man plays guitar .", "hypothesis": "A man plays music .", "label": "entailment"},
        {"id": "test-1", "premise": "Two dogs run .", "hypothesis": "Cats sleep .", "label": "contradiction"},
    ]


def test_esnli_split_from_path(tmp_path: Path) -> None:
    d = esnli_dir(tmp_path, "dev")
    esnli_dir(tmp_path, "test", labels="neutral\nneutral\n")
    assert [r["id"] for r in read_esnli(d / "dev")] == ["dev-0", "dev-1"]
    assert [r["label"] for r in read_esnli(d, split="test")] == ["neutral", "neutral"]
    assert [r["label"] for r in read_esnli(d / "s1.dev")] == ["entailment", "contradiction"]
    assert_data_error(read_esnli, d / "dev", "split='test'", split="test")


def test_esnli_explanations(tmp_path: Path) -> None:
    rows = read_esnli(esnli_dir(tmp_path, preproc1_expl_2="guitar makes music .\n\n"), with_explanations=True)
    assert rows[0]["explanations"] == ["playing guitar is playing music .", "guitar makes music ."]
    assert rows[0]["explanation"] == "playing guitar is playing music ."
    assert rows[1]["explanations"] == ["dogs are not cats ."]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"labels": "entailment\n"}, "different line counts"),
        ({"labels": "entailment\n\n"}, "line 2 of labels.test is empty"),
        ({"s2": "A man plays music .\n \n"}, "line 2 of s2.test is empty"),
    ],
)
def test_esnli_malformed(tmp_path: Path, overrides: dict[str, str], match: str) -> None:
    assert_data_error(read_esnli, esnli_dir(tmp_path, **overrides), match)


def test_esnli_missing_file(tmp_path: Path) -> None:
    d = esnli_dir(tmp_path)
    (d / "s2.test").unlink()
    with pytest.raises(DataError, match="not found") as info:
        read_esnli(d)
    assert info.value.source == str(d / "s2.test")


def test_esnli_explanations_need_the_first_explanation_file(tmp_path: Path) -> None:
    d = esnli_dir(tmp_path)
    (d / "preproc1_expl_1.test").unlink()
    with pytest.raises(DataError, match="not found"):
        read_esnli(d, with_explanations=True)


# -- GSM8K ---------------------------------------------------------------------------------------------
def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_gsm8k_rows(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "test.jsonl",
        [
            {"question": "Q1?", "answer": "16 - 3 = <<16-3=13>>13\nSo 13 * 2 = 26.\n#### 26"},
            {"question": "Q2?", "answer": "It costs 2,125 dollars.\n#### 2,125"},
            {"question": "Q3?", "answer": "Below zero.\n#### -3.5"},
        ],
    )
    rows = read_gsm8k(path)
    assert rows[0] == {
        "id": "test-0",
        "question": "Q1?",
        "answer": "26",
        "reasoning": "16 - 3 = <<16-3=13>>13\nSo 13 * 2 = 26.",
    }
    assert [r["answer"] for r in rows] == ["26", "2125", "-3.5"]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"question": "Q?", "answer": "no marker 12"}', "record 1: 'answer' does not end with '#### <number>'"),
        ('{"question": "Q?", "answer": "#### twelve"}', "does not end with"),
        ('{"answer": "#### 1"}', "'question'"),
        ('{"question": "Q?"', "line 1 is not valid JSON"),
    ],
)
def test_gsm8k_malformed(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    assert_data_error(read_gsm8k, path, match)


# -- MultiArith ----------------------------------------------------------------------------------------
def problem(i: int, question: str, solution: Any) -> dict[str, Any]:
    return {"iIndex": i, "sQuestion": question, "lEquations": ["X=(1.0+2.0)"], "lSolutions": solution}


def test_multiarith_rows(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "MultiArith.json",
        [problem(7, " How many? ", [18.0]), problem(8, "Half?", [2.5]), problem(9, " How many? ", [18.0])],
    )
    assert read_multiarith(path) == [
        {"id": "MultiArith-7", "question": "How many?", "answer": "18", "equation": "X=(1.0+2.0)"},
        {"id": "MultiArith-8", "question": "Half?", "answer": "2.5", "equation": "X=(1.0+2.0)"},
    ]
    assert len(read_multiarith(path, dedupe=False)) == 3


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"sQuestion": "Q"}, "JSON array"),
        ([problem(0, "Q", [])], "problem 0: 'lSolutions' must be a non-empty list of numbers"),
        ([problem(0, "Q", ["18"])], "'lSolutions'"),
        ([problem(0, "Q", [True])], "'lSolutions'"),
        ([{"iIndex": 0, "lSolutions": [1.0]}], "'sQuestion'"),
        (["text"], "problem 0 is not a JSON object"),
    ],
)
def test_multiarith_malformed(tmp_path: Path, data: Any, match: str) -> None:
    assert_data_error(read_multiarith, write_json(tmp_path / "MultiArith.json", data), match)


# -- through the task loader ---------------------------------------------------------------------------
def test_list_targets_through_the_loader(tmp_path: Path) -> None:
    induce = {
        str(i): {"input": f"w{i}", "output": f"m{i}", "possible_translations": [f"m{i}", f"alt{i}"]} for i in range(30)
    }
    ii_file(tmp_path / "data", induce, name="tr", folder="induce")
    ii_file(tmp_path / "data", {"1": {"input": "x", "output": "y", "possible_translations": ["z"]}}, name="tr")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "template.jinja").write_text("{{ instruction }}\nInput: {{ input }}\nOutput:")
    (tmp_path / "t" / "task.yaml").write_text(
        "instruction: Translate.\ntemplate: template.jinja\ntarget: output\nmetric: exact_match\n"
        "data:\n  files: {train: ../data/induce/tr.json, test: ../data/execute/tr.json}\n"
        "  reader: instruction_induction\n  splits: {train: 5, dev: 10}\n"
    )
    task = load_task(tmp_path / "t")
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 5, "dev": 10, "test": 1}
    [ex] = task.test
    assert ex.id == "execute/tr-1" and ex.target == ("y", "z") and ex.answer == "y"
    assert task.metric("Z", ex) == 1.0 and task.metric("w", ex) == 0.0
