"""DSPy interop at the task level, without models (needs the ``dspy`` extra, imported late).

- :func:`task_signature`: a task's inputs, one output field ``answer`` and an instruction as a ``dspy.Signature``
  (a prompt as a ``dspy.Predict``: ``Prompt.to_dspy()``, :mod:`promptopt.core.dspy_values`);
- :func:`from_dspy`: a compiled DSPy program back as a :class:`Prompt` — its predictor's instruction and demos
  inside a base prompt's template, so promptopt's evaluator scores it like any candidate.
- :func:`dspy_metric`: a task's parser + metric as a DSPy metric ``metric(example, prediction, trace=None)``.
- :func:`task_from_dspy`: a DSPy signature, examples and metric as a promptopt :class:`Task`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example, split_examples
from promptopt.core.dspy_values import ID_FIELD, OUTPUT, dspy_module, input_names, make_signature
from promptopt.core.exceptions import ConfigError, DataError
from promptopt.core.metrics import score_prediction
from promptopt.core.task import Task, make_task
from promptopt.core.template import RESERVED


def task_signature(task: Task, prompt: Prompt | None = None) -> Any:
    """The signature of ``task`` (a :class:`~promptopt.core.task.Task`) with ``prompt``'s instruction (default: the
    seed instruction)."""
    prompt = prompt or task.seed_prompt()
    return make_signature(prompt.instruction, input_names(prompt.template, task.train[0]), task.labels)


def from_dspy(program: Any, base: Prompt, *, inputs: Sequence[str], origin: str = "dspy", **meta: Any) -> Prompt:
    """The :class:`Prompt` a compiled DSPy program stands for: ``base`` (template, system message) with the program's
    instruction and its demos that have every input field and an answer (others — e.g. a bootstrapped demo whose
    output failed to parse — are dropped). A program of several predictors is refused."""
    predictors = program.predictors()
    if len(predictors) != 1:
        raise ConfigError(
            f"a promptopt Prompt holds one predictor; this program has {len(predictors)}.", field="program"
        )
    predictor = predictors[0]
    demos = []
    for i, demo in enumerate(predictor.demos):
        get = demo.get if hasattr(demo, "get") else dict(demo).get
        values = {name: get(name) for name in inputs}
        answer = get(OUTPUT)
        if answer is None or any(v is None for v in values.values()):
            continue
        demos.append(Example(id=str(get(ID_FIELD) or f"dspy-demo-{i}"), inputs=values, target=str(answer)))
    return dataclasses.replace(
        base,
        instruction=str(predictor.signature.instructions),
        demos=tuple(demos),
        parents=(base.id,),
        origin=origin,
        meta=meta,
    )


def dspy_metric(task: Task) -> Callable[..., float | bool]:
    """``task``'s parser and metric as a DSPy metric on ``answer`` predictions.

    DSPy calls it as ``metric(example, prediction, trace)`` (bootstrapping passes a trace and expects a pass/fail:
    then a score of 1.0 passes) or, in GEPA, with two more arguments (a score is returned). An unparsable or missing
    answer scores 0; a metric that raises scores 0 (as in promptopt's evaluator).
    """
    by_id = {ex.id: ex for split in task.splits.values() for ex in split}

    def metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        ex = by_id.get(example.get(ID_FIELD))
        if ex is None:
            ex = Example(id="dspy", inputs=dict(example.inputs()), target=str(example.get(OUTPUT)))
        text = getattr(prediction, OUTPUT, None)
        parsed = task.parser(str(text)) if text is not None else None
        score = 0.0 if parsed is None else score_prediction(task.metric, parsed, ex)[0]
        return score >= 1.0 if trace is not None and pred_name is None else score

    return metric


def task_from_dspy(
    signature: Any,
    trainset: Sequence[Any],
    metric: Callable[..., Any],
    *,
    devset: Sequence[Any] | None = None,
    testset: Sequence[Any] | None = None,
    name: str = "dspy",
    seed: int = 0,
) -> Task:
    """A promptopt :class:`~promptopt.core.task.Task` from a DSPy signature (one output field), ``dspy.Example``\\ s
    and a DSPy metric ``metric(example, prediction, trace=None)``.

    The template shows each field with its DSPy prefix (``Question: …``), demos first; a ``Literal`` output type
    makes it a classification task with those labels. ``devset`` / ``testset`` not given: a quarter of
    ``trainset`` each, shuffled with ``seed``. An example's ``id`` field, if any, becomes its id.
    """
    dspy = dspy_module()
    signature = dspy.ensure_signature(signature)
    inputs, outputs = list(signature.input_fields), list(signature.output_fields)
    if len(outputs) != 1:
        raise ConfigError(f"a task has one output; this signature has {outputs}.", field="signature")
    output = outputs[0]
    clash = sorted(set(inputs) & {*RESERVED, OUTPUT})
    if clash:
        raise ConfigError(
            f"input field(s) {clash} are reserved in promptopt templates; rename them.", field="signature"
        )
    annotation = signature.output_fields[output].annotation
    labels = [str(a) for a in typing.get_args(annotation)] if typing.get_origin(annotation) is typing.Literal else None

    def prefix(field: str) -> str:
        extra = signature.fields[field].json_schema_extra or {}
        return str(extra.get("prefix") or f"{field.replace('_', ' ').capitalize()}:")

    demo = "".join(f"{prefix(n)} {{{{ d.{n} }}}}\n" for n in inputs) + f"{prefix(output)} {{{{ d.answer }}}}\n"
    query = "".join(f"{prefix(n)} {{{{ {n} }}}}\n" for n in inputs) + prefix(output)
    template = "{{ instruction }}\n{% for d in demos %}\n" + demo + "{% endfor %}\n" + query

    def examples(rows: Sequence[Any], split: str) -> list[Example]:
        out = []
        for i, row in enumerate(rows):
            data = dict(row.toDict() if hasattr(row, "toDict") else row)
            missing = [f for f in (*inputs, output) if data.get(f) is None]
            if missing:
                raise DataError(f"{split} example {i} lacks the signature's field(s) {missing}.", source=name)
            target = data[output]
            target = tuple(str(t) for t in target) if isinstance(target, list | tuple) else str(target)
            ex_id = str(data.get("id", f"{split}-{i}"))
            out.append(Example(id=ex_id, inputs={n: data[n] for n in inputs}, target=target))
        return out

    train = examples(trainset, "train")
    splits = {"dev": examples(devset, "dev") if devset is not None else None}
    splits["test"] = examples(testset, "test") if testset is not None else None
    cut = {s: len(train) // 4 for s, given in splits.items() if given is None}
    if cut:
        if min(cut.values()) < 1:
            raise DataError(
                f"{len(train)} train examples are too few to cut dev/test splits from; pass devset/testset."
            )
        parts = split_examples(train, {**cut, "train": None}, seed=seed)
        train, splits = list(parts["train"]), {s: splits[s] or list(parts[s]) for s in splits}

    def promptopt_metric(prediction: str, example: Example) -> float:
        gold = dspy.Example(**example.inputs, **{output: example.answer}).with_inputs(*inputs)
        value = metric(gold, dspy.Prediction(**{output: prediction}), None)
        return float(getattr(value, "score", value))

    promptopt_metric.__qualname__ = f"dspy:{getattr(metric, '__qualname__', type(metric).__qualname__)}"
    return make_task(
        name=name,
        template=template,
        instruction=str(signature.instructions),
        train=train,
        dev=splits["dev"] or [],
        test=splits["test"] or [],
        metric=promptopt_metric,
        labels=labels,
        description=f"From the DSPy signature {signature.__name__} ({', '.join(inputs)} -> {output}).",
    )
