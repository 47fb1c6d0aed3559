"""Readers for public benchmarks in their original file layouts (named readers in task.yaml ``data.reader``).

Each reader returns ``list[dict]`` rows with a stable ``id`` column, the input column(s) and the answer
column; a malformed file raises :class:`~promptopt.core.exceptions.DataError` naming the file and the problem.
Rows whose input repeats an earlier row are dropped (``dedupe=True``) so splits cut from one file cannot
share an input; when the copies disagree on the answer, every copy is dropped (the label is ambiguous).

=========================  =======================================  ==========================================
reader                     file(s)                                  columns
=========================  =======================================  ==========================================
``bbh``                    ``bbh/<task>.json``                      ``input``, ``target``
``instruction_induction``  ``raw/{induce,execute}/<task>.json``     ``input``, ``output`` (text or list)
``esnli``                  ``eSNLI/{s1,s2,labels}.<split>``         ``premise``, ``hypothesis``, ``label``
``gsm8k``                  ``test.jsonl``                           ``question``, ``answer``, ``reasoning``
``multiarith``             ``MultiArith.json``                      ``question``, ``answer``, ``equation``
=========================  =======================================  ==========================================
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

from promptopt.core.exceptions import DataError
from promptopt.core.readers import Row, _read_text, read_jsonl

__all__ = ["format_number", "read_bbh", "read_esnli", "read_gsm8k", "read_instruction_induction", "read_multiarith"]

II_ANSWER_LISTS = ("possible_translations", "possible_outputs", "other_rhymes")
"""Instruction-Induction fields that list acceptable answers besides ``output`` (APE/PE2 scoring)."""

_GSM8K_ANSWER = re.compile(r"^(.*)\n?#### *(-?[\d,]*\.?\d+)\s*$", re.DOTALL)


# -- shared helpers ------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg}, line {exc.lineno}).", source=str(path)) from None


def _text(record: Mapping[str, Any], key: str, where: str, path: Path) -> str:
    """``record[key]`` as a non-empty string, or a DataError naming the record and the field."""
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where} has no non-empty text field {key!r} (fields: {sorted(record)}).", source=str(path))
    return value


def _dedupe(rows: list[Row], key: Callable[[Row], Hashable], target: str) -> list[Row]:
    """Keep the first row per input; drop every copy of an input whose rows disagree on ``target``."""
    first: dict[Hashable, Row] = {}
    conflicting: set[Hashable] = set()
    for row in rows:
        k = key(row)
        if k not in first:
            first[k] = row
        elif first[k][target] != row[target]:
            conflicting.add(k)
    return [row for k, row in first.items() if k not in conflicting]


def format_number(value: float) -> str:
    """A number as a clean string: ``18.0`` → ``"18"``, ``2.5`` → ``"2.5"``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# -- BIG-Bench Hard ------------------------------------------------------------------------------------
def read_bbh(path: Path, *, dedupe: bool = True) -> list[Row]:
    """A BIG-Bench Hard task file ``{"canary": ..., "examples": [{"input", "target"}]}``.

    Rows: ``id`` (``<task>-<index in the file>``), ``input``, ``target``.
    """
    data = _load_json(path)
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise DataError(
            'expected a JSON object with a list under "examples" (BIG-Bench Hard format).', source=str(path)
        )
    rows = []
    for i, ex in enumerate(examples):
        where = f"example {i}"
        if not isinstance(ex, dict):
            raise DataError(f"{where} is not a JSON object.", source=str(path))
        rows.append(
            {
                "id": f"{path.stem}-{i}",
                "input": _text(ex, "input", where, path),
                "target": _text(ex, "target", where, path),
            }
        )
    return _dedupe(rows, itemgetter("input"), "target") if dedupe else rows


# -- Instruction Induction -----------------------------------------------------------------------------
def _ii_pair(ex: Mapping[str, Any], where: str, path: Path, seed: int) -> tuple[str, str | list[str]]:
    """(input, answer) of one Instruction-Induction example, for every schema of the 24 tasks."""
    if "cause" in ex and "effect" in ex:  # cause_and_effect: both sentences, seeded order; the answer is the cause
        cause, effect = _text(ex, "cause", where, path), _text(ex, "effect", where, path)
        first, second = (
            (cause, effect) if random.Random(f"{seed}:{cause}\n{effect}").random() < 0.5 else (effect, cause)
        )
        return f"Sentence 1: {first} Sentence 2: {second}", cause
    if "items" in ex and "all_common_concepts" in ex:  # common_concept: the items; any listed concept is right
        items, concepts = ex["items"], ex["all_common_concepts"]
        if not _str_list(items) or not _str_list(concepts):
            raise DataError(
                f"{where}: 'items' and 'all_common_concepts' must be lists of text with at least one entry.",
                source=str(path),
            )
        return ", ".join(i for i in items if i.strip()), _answers(ex.get("concept"), concepts)
    text, output = _text(ex, "input", where, path), _text(ex, "output", where, path)
    for key in II_ANSWER_LISTS:
        if key in ex:
            if not _str_list(ex[key]):
                raise DataError(f"{where}: {key!r} must be a list of text with at least one entry.", source=str(path))
            return text, _answers(output, ex[key])
    return text, output


def _str_list(value: Any) -> bool:
    """A list of strings with at least one non-blank entry (blank entries occur in the data and are skipped)."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value) and any(v.strip() for v in value)


def _answers(canonical: Any, alternatives: Iterable[str]) -> list[str]:
    """Acceptable answers, the canonical one first (it is what demonstrations show), no blanks or repeats."""
    first = [canonical] if isinstance(canonical, str) else []
    return list(dict.fromkeys(a for a in [*first, *alternatives] if a.strip()))


def read_instruction_induction(path: Path, *, seed: int = 0, dedupe: bool = True) -> list[Row]:
    """An Instruction-Induction task file ``{"metadata": ..., "examples": {"1": {...}, ...}}`` (any of the 24).

    Rows: ``id`` (``<folder>/<task>-<key>``, e.g. ``induce/antonyms-7``), ``input``, ``output`` and the
    example's other fields. ``output`` is a list of acceptable answers (canonical first) where the task has
    one: ``possible_translations`` (translation_*), ``possible_outputs`` (word_in_context), ``other_rhymes``
    (rhymes), ``all_common_concepts`` (common_concept). Following APE/PE2, ``cause_and_effect`` shows both
    sentences as ``Sentence 1: ... Sentence 2: ...`` in an order drawn from ``seed`` and the pair (so it is
    reproducible and independent of file order) and expects the cause; ``common_concept`` shows the items
    joined by ", ".
    """
    data = _load_json(path)
    examples = data.get("examples") if isinstance(data, dict) else None
    if isinstance(examples, list):
        examples = {str(i): ex for i, ex in enumerate(examples, 1)}
    if not isinstance(examples, dict):
        raise DataError('expected a JSON object with "examples" (Instruction-Induction format).', source=str(path))
    consumed = {"input", "output", "cause", "effect", "items", "all_common_concepts", "concept", *II_ANSWER_LISTS}
    rows = []
    for key, ex in examples.items():
        where = f"example {key!r}"
        if not isinstance(ex, dict):
            raise DataError(f"{where} is not a JSON object.", source=str(path))
        text, answer = _ii_pair(ex, where, path, seed)
        extras = {k: v for k, v in ex.items() if k not in consumed and k != "id"}
        rows.append({"id": f"{path.parent.name}/{path.stem}-{key}", "input": text, "output": answer, **extras})
    return _dedupe(rows, itemgetter("input"), "output") if dedupe else rows


# -- e-SNLI --------------------------------------------------------------------------------------------
_ESNLI_COLUMNS = {"premise": "s1", "hypothesis": "s2", "label": "labels"}
"""Row column -> e-SNLI file name (the file is ``<name>.<split>``)."""


def _esnli_files(path: Path, split: str | None) -> tuple[Path, str]:
    """(directory, split) from ``path``: the eSNLI directory (+ ``split``), ``<directory>/<split>`` or one file."""
    if path.is_dir():
        return path, split or "test"
    named = path.suffix.lstrip(".") if path.is_file() else path.name  # eSNLI/s1.dev or eSNLI/dev
    if split is not None and split != named:
        raise DataError(f"the path names split {named!r} but the reader option says split={split!r}.", source=str(path))
    return path.parent, named


def _esnli_column(directory: Path, name: str, split: str) -> list[str]:
    return [line.strip() for line in _read_text(directory / f"{name}.{split}").splitlines()]


def read_esnli(
    path: Path, *, split: str | None = None, with_explanations: bool = False, dedupe: bool = True
) -> list[Row]:
    """e-SNLI's line-aligned files ``s1`` (premise), ``s2`` (hypothesis), ``labels`` [, ``preproc1_expl_k``].

    ``path`` is the eSNLI directory (``split`` picks the ``.<split>`` files, default ``test``) or
    ``<directory>/<split>`` such as ``data/eSNLI/dev`` (so each task split can name its own file set).
    Rows: ``id`` (``<split>-<line index>``), ``premise``, ``hypothesis``, ``label`` and, with
    ``with_explanations``, ``explanations`` (the list of ``preproc1_expl_1..3`` present) and ``explanation``
    (the first one).
    """
    directory, split = _esnli_files(path, split)
    files = dict(_ESNLI_COLUMNS)
    expl = [f"preproc1_expl_{k}" for k in (1, 2, 3) if k == 1 or (directory / f"preproc1_expl_{k}.{split}").is_file()]
    if with_explanations:
        files.update({name: name for name in expl})
    data = {col: _esnli_column(directory, name, split) for col, name in files.items()}
    lengths = {f"{name}.{split}": len(data[col]) for col, name in files.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"the line-aligned files have different line counts: {lengths}.", source=str(directory))
    rows = []
    for i in range(len(data["label"])):
        row: Row = {"id": f"{split}-{i}", **{col: data[col][i] for col in _ESNLI_COLUMNS}}
        empty = [col for col in _ESNLI_COLUMNS if not row[col]]
        if empty:
            raise DataError(f"line {i + 1} of {files[empty[0]]}.{split} is empty.", source=str(directory))
        if with_explanations:
            row["explanations"] = [data[name][i] for name in expl if data[name][i]]
            row["explanation"] = data[expl[0]][i]
        rows.append(row)
    return _dedupe(rows, itemgetter("premise", "hypothesis"), "label") if dedupe else rows


# -- math word problems --------------------------------------------------------------------------------
def read_gsm8k(path: Path, *, dedupe: bool = True) -> list[Row]:
    """GSM8K JSONL ``{"question", "answer"}``; the final number follows ``#### `` in ``answer``.

    Rows: ``id`` (``<file stem>-<line index>``), ``question``, ``answer`` (the final number, thousands
    separators removed) and ``reasoning`` (the worked solution before ``####``, verbatim).
    """
    rows = []
    for i, rec in enumerate(read_jsonl(path)):
        where = f"record {i + 1}"
        m = _GSM8K_ANSWER.match(_text(rec, "answer", where, path))
        if not m:
            raise DataError(f"{where}: 'answer' does not end with '#### <number>'.", source=str(path))
        question = _text(rec, "question", where, path)
        rows.append(
            {"id": f"{path.stem}-{i}", "question": question, "answer": m[2].replace(",", ""), "reasoning": m[1].strip()}
        )
    return _dedupe(rows, itemgetter("question"), "answer") if dedupe else rows


def read_multiarith(path: Path, *, dedupe: bool = True) -> list[Row]:
    """MultiArith JSON array of ``{"iIndex", "sQuestion", "lEquations", "lSolutions", ...}``.

    Rows: ``id`` (``<file stem>-<iIndex>``), ``question`` (stripped), ``answer`` (``lSolutions[0]`` as a clean
    number string, ``"18"`` not ``"18.0"``) and ``equation`` (``lEquations[0]``, or ``""``).
    """
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError("expected a JSON array of problems (MultiArith format).", source=str(path))
    rows = []
    for i, rec in enumerate(data):
        where = f"problem {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where} is not a JSON object.", source=str(path))
        solutions = rec.get("lSolutions")
        if not isinstance(solutions, list) or not solutions or not _is_number(solutions[0]):
            raise DataError(f"{where}: 'lSolutions' must be a non-empty list of numbers.", source=str(path))
        equations = rec.get("lEquations") or [""]
        rows.append(
            {
                "id": f"{path.stem}-{rec.get('iIndex', i)}",
                "question": _text(rec, "sQuestion", where, path).strip(),
                "answer": format_number(solutions[0]),
                "equation": str(equations[0]),
            }
        )
    return _dedupe(rows, itemgetter("question"), "answer") if dedupe else rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
