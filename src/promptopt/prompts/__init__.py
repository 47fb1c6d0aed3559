"""Layer 2, prompt → variants: In-Context Sampling plans, FormatSpread formats, embeddings for demo selection.

Imports only :mod:`promptopt.core`.
"""
