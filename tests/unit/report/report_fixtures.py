"""What the report tests' runs propose (shared by conftest.py and the tests)."""

from __future__ import annotations

from promptopt.testing import TOY_BEST_INSTRUCTION

HOSTILE = f'<script>alert("pwned")</script></pre><img src=x onerror=alert(1)> {TOY_BEST_INSTRUCTION}'
"""A proposal that is also markup: the best prompt of the run, so the report shows it everywhere."""
PROPOSALS = ("Reverse the word.", HOSTILE, "Say the word.", "Spell it.")
