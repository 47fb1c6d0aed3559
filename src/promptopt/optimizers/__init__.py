"""Optimizers. Built-ins register themselves here; third-party ones through the
``promptopt.optimizers`` entry-point group."""

from promptopt.optimizers.ape import APEConfig, APEOptimizer
from promptopt.optimizers.base import (
    OPTIMIZERS,
    EvalRequest,
    Optimizer,
    OptimizerConfig,
    RunContext,
    RunState,
    register_optimizer,
)
from promptopt.optimizers.baseline import BaselineOptimizer

__all__ = [
    "OPTIMIZERS",
    "APEConfig",
    "APEOptimizer",
    "BaselineOptimizer",
    "EvalRequest",
    "Optimizer",
    "OptimizerConfig",
    "RunContext",
    "RunState",
    "register_optimizer",
]
