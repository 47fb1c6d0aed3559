"""Budget planning for optimizers that screen candidates on dev minibatches before confirming them.

A screen that spends the whole budget on minibatches ends with nothing confirmed on the full dev split, and
the run returns the seed prompt without having tested a single candidate properly. The helpers here let an
optimizer reserve the confirmations first and screen only what the rest pays for, in *planned* calls
(:meth:`promptopt.optimizers.base.RunContext.calls_left`: every distinct request counts, cache hits included,
so plans replay identically on resume). Costs are worst cases: racing can only spend less.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError

if TYPE_CHECKING:
    from promptopt.run.context import RunContext

T = TypeVar("T")


def subprompts(prompt: Prompt) -> int:
    """Model calls per example: K for an In-Context Sampling prompt, else 1."""
    return prompt.ics.k if prompt.ics is not None else 1


def eval_cost(prompt: Prompt, n_examples: int) -> int:
    """Worst-case calls to score ``prompt`` on ``n_examples``."""
    return subprompts(prompt) * n_examples


def affordable(
    items: Sequence[T], left: int | None, cost: Callable[[T], int], reserve: Callable[[Sequence[T]], int]
) -> list[T]:
    """The longest prefix of ``items`` whose summed ``cost`` plus ``reserve(prefix)`` fits in ``left`` calls
    (all of them when ``left`` is None: no call limit)."""
    if left is None:
        return list(items)
    out: list[T] = []
    spent = 0
    for item in items:
        if spent + cost(item) + reserve([*out, item]) > left:
            break
        out.append(item)
        spent += cost(item)
    return out


def race_worst_case(sizes: Sequence[int], n_dev: int, subprompts: int = 1) -> int:
    """Worst-case calls of one raced candidate: every stage up to ``sizes[-1]`` examples, or its full-dev
    evaluation when there is no race (``sizes`` empty)."""
    return subprompts * (sizes[-1] if sizes else n_dev)


def race_confirmations(ctx: RunContext, sizes: Sequence[int], n: int, top_k: int, subprompts: int = 1) -> int:
    """Calls to reserve for confirming up to ``top_k`` of ``n`` race survivors on full dev (none without a race:
    the full-dev evaluation is the confirmation)."""
    return min(top_k, n) * ctx.confirmation_cost(sizes[-1], subprompts) if sizes else 0


def top_confirmation_cost(prompts: Sequence[Prompt], top_k: int, cost: Callable[[Prompt], int]) -> int:
    """Worst-case cost of confirming ``top_k`` of ``prompts`` on the full dev split: the ``top_k`` dearest
    ``cost(prompt)``."""
    return sum(sorted(map(cost, prompts), reverse=True)[:top_k])


def refuse_small_budget(optimizer: str, needed: int, seed_cost: int, max_calls: int, what: str) -> None:
    """Raise the up-front refusal when a call budget cannot pay for the seed plus one screen and confirmation."""
    total = seed_cost + needed
    if max_calls < total:
        raise ConfigError(
            f"a budget of {max_calls} calls cannot pay for optimizer '{optimizer}': the seed prompt on dev "
            f"({seed_cost}) plus {what} ({needed}) need {total}. Ask for at least --budget-calls {total} "
            "(or shrink the dev split or the optimizer's settings).",
            field="budget.max_calls",
        )
