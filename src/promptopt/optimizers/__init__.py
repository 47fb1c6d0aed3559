"""Optimizers. Built-ins register themselves here; third-party ones through the
``promptopt.optimizers`` entry-point group."""

from promptopt.optimizers.ape import APEConfig, APEOptimizer
from promptopt.optimizers.apo import APOConfig, APOOptimizer
from promptopt.optimizers.auto import AutoConfig, AutoOptimizer
from promptopt.optimizers.base import OPTIMIZERS, Optimizer, register_optimizer
from promptopt.optimizers.baseline import BaselineOptimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.dspy_opt import DSPyConfig, DSPyOptimizer
from promptopt.optimizers.feedback import FeedbackConfig, FeedbackOptimizer
from promptopt.optimizers.fewshot import FewShotConfig, FewShotOptimizer
from promptopt.optimizers.gradient_text import GradientTextConfig, GradientTextOptimizer
from promptopt.optimizers.ics import ICSConfig, ICSOptimizer
from promptopt.optimizers.opro import OPROConfig, OPROOptimizer
from promptopt.optimizers.pe2 import PE2Config, PE2Optimizer
from promptopt.optimizers.soft_prompt import SoftPromptConfig, SoftPromptOptimizer
from promptopt.optimizers.structure_search import StructureSearchConfig, StructureSearchOptimizer
from promptopt.optimizers.unsupervised import UnsupervisedConfig, UnsupervisedOptimizer
from promptopt.run.context import EvalRequest, RunContext, RunState

__all__ = [
    "OPTIMIZERS",
    "APEConfig",
    "APEOptimizer",
    "APOConfig",
    "APOOptimizer",
    "AutoConfig",
    "AutoOptimizer",
    "BaselineOptimizer",
    "DSPyConfig",
    "DSPyOptimizer",
    "EvalRequest",
    "FeedbackConfig",
    "FeedbackOptimizer",
    "FewShotConfig",
    "FewShotOptimizer",
    "GradientTextConfig",
    "GradientTextOptimizer",
    "ICSConfig",
    "ICSOptimizer",
    "OPROConfig",
    "OPROOptimizer",
    "Optimizer",
    "OptimizerConfig",
    "PE2Config",
    "PE2Optimizer",
    "RunContext",
    "RunState",
    "SoftPromptConfig",
    "SoftPromptOptimizer",
    "StructureSearchConfig",
    "StructureSearchOptimizer",
    "UnsupervisedConfig",
    "UnsupervisedOptimizer",
    "register_optimizer",
]
