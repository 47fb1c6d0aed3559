"""Layer 1, value types: Example, Task, Prompt, templates, metrics, parsers, statistics, task files.

Imports nothing else from promptopt.
"""
