"""Data-file readers for task.yaml: each turns a file into a list of row dicts.

Generic readers are chosen by file extension (.jsonl, .json, .csv, .tsv); named readers (``reader:`` in
task.yaml) understand a benchmark's own layout. Register more with ``READERS.add(name, fn)``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from promptopt.core._registry import Registry
from promptopt.core.exceptions import DataError

Row = dict[str, Any]
Reader = Callable[..., list[Row]]

# csv.QUOTE_MINIMAL, QUOTE_ALL, QUOTE_NONNUMERIC, QUOTE_NONE: the values csv.DictReader's ``quoting`` takes
Quoting = Literal[0, 1, 2, 3]

READERS: Registry[Reader] = Registry("data reader", group="promptopt.readers")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("data file not found. Check the path in task.yaml 'data'.", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc}).", source=str(path)) from None


def read_jsonl(path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {n} is not valid JSON ({exc.msg}).", source=str(path)) from None
        if not isinstance(row, dict):
            raise DataError(f"line {n} is not a JSON object.", source=str(path))
        rows.append(row)
    return rows


def read_json(path: Path, *, key: str | None = None) -> list[Row]:
    """A JSON array of objects, or the array/object-of-objects under ``key``."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg}, line {exc.lineno}).", source=str(path)) from None
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"has no top-level key '{key}'.", source=str(path))
        data = data[key]
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError("expected a list of JSON objects.", source=str(path))
    return data


def _read_delimited(path: Path, delimiter: str, quoting: Quoting) -> list[Row]:
    csv.field_size_limit(sys.maxsize)
    lines = _read_text(path).splitlines()
    reader = csv.DictReader(lines, delimiter=delimiter, quoting=quoting)
    rows = []
    for n, row in enumerate(reader, 2):
        if None in row:
            raise DataError(f"line {n} has more fields than the header.", source=str(path))
        rows.append({k.strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()})
    return rows


def read_csv(path: Path) -> list[Row]:
    return _read_delimited(path, ",", csv.QUOTE_MINIMAL)


def read_tsv(path: Path, *, quoted: bool = False) -> list[Row]:
    """Tab-separated with a header; unquoted by default (SST-2/GLUE style)."""
    return _read_delimited(path, "\t", csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)


READERS.add("jsonl", read_jsonl)
READERS.add("json", read_json)
READERS.add("csv", read_csv)
READERS.add("tsv", read_tsv)
READERS.add("bbh", "promptopt.core.benchmarks_data:read_bbh")
READERS.add("instruction_induction", "promptopt.core.benchmarks_data:read_instruction_induction")
READERS.add("esnli", "promptopt.core.benchmarks_data:read_esnli")
READERS.add("gsm8k", "promptopt.core.benchmarks_data:read_gsm8k")
READERS.add("multiarith", "promptopt.core.benchmarks_data:read_multiarith")


def reader_for(path: Path, name: str | None) -> Reader:
    if name is not None:
        return READERS.get(name)
    ext = path.suffix.lower().lstrip(".")
    if ext in ("jsonl", "json", "csv", "tsv"):
        return READERS.get(ext)
    raise DataError(
        f"cannot tell the format from the extension '{path.suffix}'. Use .jsonl/.json/.csv/.tsv or set "
        f"'data.reader' to one of: {', '.join(READERS.names())}.",
        source=str(path),
    )
