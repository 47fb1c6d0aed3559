"""promptopt: find better prompts automatically, with honest numbers.

>>> import promptopt
>>> task = promptopt.load_task("sst2")                                          # doctest: +SKIP
>>> result = promptopt.optimize(task, "ape", "smollm2", budget=promptopt.Budget(max_calls=500))  # doctest: +SKIP
>>> print(result.format())                                                       # doctest: +SKIP

Importing promptopt loads no torch, transformers, litellm or optuna; backends import them on use.

Layers, bottom to top (a module imports only its own layer and those below): ``core`` (value types), ``prompts``
(ICS plans, formats, embeddings), ``models`` (backends, client, cache, budget), ``evaluation`` (the Evaluator),
``run`` (the context an optimizer sees, the loop, history, result), ``optimizers``, ``api`` (optimize, evaluate,
resume, spread), ``cli``, ``testing``. This module re-exports the public API.
"""

import logging

from promptopt.api import evaluate, optimize, resume
from promptopt.compare import compare_optimizers as compare_optimizers
from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.dspy_interop import task_from_dspy
from promptopt.core.exceptions import (
    BackendError,
    BudgetExhausted,
    ConfigError,
    DataError,
    MissingDependencyError,
    PromptOptError,
    TemplateError,
    UnknownComponentError,
)
from promptopt.core.task import Task, make_task
from promptopt.core.taskfile import available_tasks, load_task
from promptopt.core.template import PromptTemplate
from promptopt.evaluation.evaluator import EvalResult, Evaluator, ExampleRecord, compare
from promptopt.models import get_model
from promptopt.models.budget import Budget, Usage
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient
from promptopt.models.dspy_lm import dspy_lm
from promptopt.models.fake import FakeModel
from promptopt.optimizers import OPTIMIZERS, Optimizer, register_optimizer
from promptopt.optimizers.presets import load_optimizer
from promptopt.run.result import OptimizationResult, Spend, TrialSummary

__version__ = "0.1.0"

logging.getLogger("promptopt").addHandler(logging.NullHandler())

__all__ = [
    "OPTIMIZERS",
    "BackendError",
    "Budget",
    "BudgetExhausted",
    "ConfigError",
    "DataError",
    "EvalResult",
    "Evaluator",
    "Example",
    "ExampleRecord",
    "FakeModel",
    "MissingDependencyError",
    "ModelClient",
    "OptimizationResult",
    "Optimizer",
    "Prompt",
    "PromptOptError",
    "PromptTemplate",
    "ResponseCache",
    "Spend",
    "Task",
    "TemplateError",
    "TrialSummary",
    "UnknownComponentError",
    "Usage",
    "available_tasks",
    "compare",
    "dspy_lm",
    "evaluate",
    "get_model",
    "load_optimizer",
    "load_task",
    "make_task",
    "optimize",
    "register_optimizer",
    "resume",
    "task_from_dspy",
]
