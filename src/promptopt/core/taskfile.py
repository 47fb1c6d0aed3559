"""Load tasks from ``tasks/<name>/task.yaml``.

Format (every path is relative to the task.yaml)::

    name: sst2
    description: Binary sentiment of movie-review sentences.
    instruction: Is the sentiment of this review positive or negative?
    template: template.jinja           # user message; sees inputs, `instruction`, `demos`
    system: ...                        # optional system message
    data:
      files: {train: data/train.tsv, dev: data/dev.tsv, test: data/test.tsv}
      # or one file cut into splits:  file: data/all.jsonl
      reader: tsv                      # optional; default from the extension
      options: {}                      # keyword arguments for the reader
      splits: {train: 64, dev: 100, test: 200}   # sizes (null = all that is left); seeded shuffle
      seed: 0
    inputs: {sentence: sentence}       # template variable -> data column (or a list of columns)
    target: label                      # data column with the answer (a list = acceptable answers)
    labels: {"0": negative, "1": positive}   # optional: classification; raw target -> label text
    metric: accuracy                   # or {name: regex, pattern: ...} or module:function
    parser: label_set                  # or {name: regex, pattern: ...}
    generation: {max_tokens: 8, stop: ["\\n"]}
    unlabeled_train: true              # optional: train rows need no target and any there is dropped (for the
                                       # label-free `unsupervised` optimizer; every other optimizer refuses it)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from promptopt.core.candidate import DEFAULT_SYSTEM
from promptopt.core.data import Example, split_examples
from promptopt.core.exceptions import ConfigError, DataError, TemplateError, UnknownComponentError
from promptopt.core.metrics import make_metric
from promptopt.core.parsers import make_parser
from promptopt.core.readers import Row, reader_for
from promptopt.core.task import SPLITS, GenerationConfig, Task
from promptopt.core.template import PromptTemplate

_TOP_KEYS = {
    "name",
    "description",
    "instruction",
    "template",
    "system",
    "data",
    "inputs",
    "target",
    "labels",
    "metric",
    "parser",
    "generation",
    "unlabeled_train",
}
_DATA_KEYS = {"files", "file", "reader", "options", "splits", "seed"}
_REQUIRED = {
    "instruction": "Classify the review as positive or negative.",
    "template": "template.jinja",
    "data": "{file: data.jsonl}",
    "target": "label",
}


def task_dirs() -> list[Path]:
    """Where task names are looked up, in order: $PROMPTOPT_TASKS (os.pathsep list), ./tasks, the bundled tasks."""
    dirs = [Path(p) for p in os.environ.get("PROMPTOPT_TASKS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "tasks")
    here = Path(__file__).resolve().parents[1]  # the promptopt package
    dirs += [here / "_bundled" / "tasks", here.parents[1] / "tasks"]  # wheel, source checkout
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def available_tasks() -> dict[str, Path]:
    """Task name → task.yaml path (earlier directories win)."""
    found: dict[str, Path] = {}
    for d in task_dirs():
        for f in sorted(d.glob("*/task.yaml")):
            found.setdefault(f.parent.name, f)
    return found


def resolve_task_path(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.is_dir() and (p / "task.yaml").is_file():
        return p / "task.yaml"
    if p.is_file():
        return p
    tasks = available_tasks()
    if str(name_or_path) in tasks:
        return tasks[str(name_or_path)]
    if p.is_dir():
        raise ConfigError(
            "this directory has no task.yaml; give a task directory, a task.yaml path or a task name.",
            source=str(p),
            field="task",
        )
    raise UnknownComponentError(
        "task", str(name_or_path), tasks, hint="Pass a task name, a task directory or a task.yaml path.", field="task"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc}). Give a readable UTF-8 text file.", source=str(path)) from None


def read_yaml(path: Path) -> Any:
    """A YAML file's content; malformed YAML is a one-line :class:`ConfigError` with the line and column."""
    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid syntax").split())
        raise ConfigError(f"malformed YAML{where}: {problem}. Fix the syntax.", source=str(path)) from None


def load_task(name_or_path: str | os.PathLike[str]) -> Task:
    """Load a task by name (see :func:`task_dirs`) or from a directory / task.yaml path."""
    path = resolve_task_path(name_or_path)
    try:
        return _build_task(path, read_yaml(path))
    except ConfigError as exc:  # a check deeper down (a split size, generation, a parser) names the task file
        raise exc.located(source=str(path)) from None


def _build_task(path: Path, spec: Any) -> Task:
    src = str(path)
    if not isinstance(spec, dict):
        raise ConfigError("must be a YAML mapping (key: value lines).", source=src)
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}.", source=src, field=unknown[0])
    for key, example in _REQUIRED.items():
        if key not in spec:
            raise ConfigError(f"is required; add it, e.g. `{key}: {example}`.", source=src, field=key)
    base = path.parent

    template = _load_template(spec["template"], base, src)
    labels_map = _labels(spec.get("labels"), src)
    inputs = _inputs(spec.get("inputs"), template, src)
    target = spec["target"]
    if not isinstance(target, str):
        raise ConfigError("must be a column name.", source=src, field="target")
    unlabeled = spec.get("unlabeled_train", False)
    if not isinstance(unlabeled, bool):
        raise ConfigError("must be true or false.", source=src, field="unlabeled_train")
    splits = _load_splits(
        spec["data"], base, src, inputs=inputs, target=target, labels=labels_map, optional_target=unlabeled
    )
    if unlabeled:  # train targets are dropped on load: nothing downstream can read them
        splits["train"] = tuple(ex.unlabeled() for ex in splits["train"])
    labels = tuple(dict.fromkeys(labels_map.values())) if labels_map else None
    generation = spec.get("generation") or {}
    if not isinstance(generation, Mapping):
        raise ConfigError("must be a mapping like {max_tokens: 16, stop: ['\\n']}.", source=src, field="generation")
    try:
        gen = GenerationConfig(**generation)
    except TypeError as exc:
        raise ConfigError(f"{exc}; allowed: max_tokens, stop.", source=src, field="generation") from None
    return Task(
        name=str(spec.get("name") or base.name),
        description=str(spec.get("description", "")),
        template=template,
        instruction=str(spec["instruction"]),
        system=str(spec.get("system", DEFAULT_SYSTEM)),
        metric=make_metric(spec.get("metric", "accuracy" if labels else "exact_match"), source=src),
        parser=make_parser(spec.get("parser"), labels=labels, source=src),
        splits=splits,
        labels=labels,
        generation=gen,
        source=src,
    )


def _load_template(value: Any, base: Path, src: str) -> PromptTemplate:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must name a template file (e.g. template.jinja).", source=src, field="template")
    tpath = base / value
    if not tpath.is_file():
        raise ConfigError(f"template file '{value}' not found next to task.yaml.", source=src, field="template")
    try:
        return PromptTemplate(_read_text(tpath), name=str(tpath))
    except TemplateError as exc:
        raise TemplateError(f"{exc.message.rstrip('.')}. Fix the Jinja2 syntax.", source=exc.source) from None


def _labels(value: Any, src: str) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, list) and value:
        return {str(v): str(v) for v in value}
    if isinstance(value, dict) and value:
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError("must be a non-empty list of labels or a mapping raw value -> label.", source=src, field="labels")


def _inputs(value: Any, template: PromptTemplate, src: str) -> dict[str, str]:
    if value is None:
        return {v: v for v in sorted(template.input_variables)}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: v for v in value}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise ConfigError("must be a list of columns or a mapping template_variable: column.", source=src, field="inputs")


def _load_splits(
    data: Any,
    base: Path,
    src: str,
    *,
    inputs: Mapping[str, str],
    target: str,
    labels: Mapping[str, str] | None,
    optional_target: bool = False,
) -> dict[str, tuple[Example, ...]]:
    """The splits; with ``optional_target`` a row without the target column is an unlabeled example (only train may
    have them: :class:`~promptopt.core.task.Task` refuses an unlabeled dev or test example)."""
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping with 'files' or 'file'.", source=src, field="data")
    unknown = sorted(set(data) - _DATA_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {sorted(_DATA_KEYS)}.", source=src, field="data")
    options = data.get("options") or {}
    sizes = data.get("splits") or {}
    seed = data.get("seed", 0)
    if not isinstance(sizes, dict) or set(sizes) - set(SPLITS):
        raise ConfigError(f"must map {list(SPLITS)} to sizes.", source=src, field="data.splits")
    for name, size in sizes.items():
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ConfigError(
                f"size must be a positive integer or null, got {size!r}.",
                source=src,
                field=f"data.splits.{name}",
            )

    def examples_from(rel: str, prefix: str) -> list[Example]:
        fpath = base / rel
        try:
            rows = reader_for(fpath, data.get("reader"))(fpath, **options)
        except TypeError as exc:
            raise ConfigError(
                f"bad reader options ({exc}); remove it or use the reader's own arguments.",
                source=src,
                field="data.options",
            ) from None
        if not rows:
            raise DataError("has no rows. Point task.yaml 'data' at a file with examples.", source=str(fpath))
        return [_example(r, i, prefix, fpath, inputs, target, labels, optional_target) for i, r in enumerate(rows)]

    if "files" in data:
        files = data["files"]
        if not isinstance(files, dict) or not files or set(files) - set(SPLITS):
            raise ConfigError(f"must map split names {list(SPLITS)} to files.", source=src, field="data.files")
        paths = [(base / str(rel)).resolve() for rel in files.values()]
        if len(set(paths)) < len(paths):
            raise ConfigError(
                "two splits read the same file, so they would overlap; use 'file' plus 'splits' sizes to cut "
                "disjoint splits from one file.",
                source=src,
                field="data.files",
            )
        out: dict[str, tuple[Example, ...]] = {}
        missing = [s for s in SPLITS if s not in files]
        for split, rel in files.items():
            exs = examples_from(str(rel), split)
            # when other splits are cut from train, train's size applies to what is left after the cut
            size = None if split == "train" and missing else sizes.get(split)
            out[split] = split_examples(exs, {split: size}, seed=seed)[split] if size else tuple(exs)
        if missing:
            # splits not given as files are cut from train (dev, then test), so they never overlap
            if "train" not in out:
                raise ConfigError("needs at least a 'train' file.", source=src, field="data.files")
            for s in missing:
                if sizes.get(s) is None:
                    raise ConfigError(
                        f"split '{s}' has no file; give it a file or a size to cut from train.",
                        source=src,
                        field=f"data.splits.{s}",
                    )
            cut = split_examples(
                out.pop("train"), {**{s: sizes[s] for s in missing}, "train": sizes.get("train")}, seed=seed
            )
            out.update({s: cut[s] for s in missing})
            out["train"] = cut["train"]
        return out
    if "file" in data:
        exs = examples_from(str(data["file"]), Path(str(data["file"])).stem)
        return split_examples(exs, {s: sizes.get(s) for s in SPLITS}, seed=seed)
    raise ConfigError("needs 'files' (one per split) or 'file' (cut into splits).", source=src, field="data")


def _example(
    row: Row,
    i: int,
    prefix: str,
    fpath: Path,
    inputs: Mapping[str, str],
    target: str,
    labels: Mapping[str, str] | None,
    optional_target: bool = False,
) -> Example:
    meta = {k: v for k, v in row.items() if k not in inputs.values() and k != target and k != "id"}
    missing = [c for c in [*inputs.values(), target] if c not in row]
    if missing == [target] and optional_target:
        return Example(id=str(row.get("id", f"{prefix}-{i}")), inputs={v: row[c] for v, c in inputs.items()}, meta=meta)
    if missing:
        raise DataError(
            f"row {i + 1} has no column {missing[0]!r} (columns: {sorted(row)}). "
            "Fix the file or the 'inputs'/'target' mapping in task.yaml.",
            source=str(fpath),
        )
    raw = row[target]
    answers = [str(a) for a in raw] if isinstance(raw, list | tuple) else [str(raw)]
    if not answers:
        raise DataError(f"row {i + 1} has an empty target list in column {target!r}.", source=str(fpath))
    if labels is not None:
        bad = [a for a in answers if a not in labels]
        if bad:
            raise DataError(
                f"row {i + 1} has target {bad[0]!r}, not one of the labels {sorted(labels)}. "
                "Fix the data or the 'labels' mapping in task.yaml.",
                source=str(fpath),
            )
        answers = [labels[a] for a in answers]
    return Example(
        id=str(row.get("id", f"{prefix}-{i}")),
        inputs={var: row[col] for var, col in inputs.items()},
        target=answers[0] if len(answers) == 1 else tuple(answers),
        meta=meta,
    )
