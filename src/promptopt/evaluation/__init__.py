"""Layer 4, scoring: the one Evaluator (render, batch, call, parse, score), paired comparison, format spread.

Imports :mod:`promptopt.core`, :mod:`promptopt.prompts` and :mod:`promptopt.models`.
"""
