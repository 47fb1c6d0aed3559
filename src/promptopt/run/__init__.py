"""Layer 5, one run: its context and state, the loop, the run directory, history, result, callbacks.

Imports the layers below (core, prompts, models, evaluation); the optimizers above plug into
:class:`~promptopt.run.context.RunContext`.
"""
