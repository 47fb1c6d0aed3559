"""Gradients of a task loss with respect to the one-hot tokens of a prompt's instruction (AutoPrompt, GReaTer).

The instruction's tokens are fed to the model as rows of ``one_hot @ E`` (``E``: the input embedding matrix), so
the gradient of the loss with respect to ``one_hot`` (shape ``(positions, vocab)``) says, to first order, how the
loss changes when the token at a position is swapped for any other: the most negative entries are the candidate
substitutions (:func:`sample_swaps`).

The loss is :meth:`promptopt.models.soft.SoftPromptModel.nll`'s — the negative log-likelihood of each target as the
assistant reply — computed through :class:`SpanModel`, which places the differentiable rows where the instruction
stands in the rendered chat (every occurrence: messages are rendered with :data:`SPAN` as the instruction) instead of
before the prompt. A target may follow a *context* the model wrote itself (GReaTer: the answer after the model's own
reasoning); its loss is then ``nll(context + target) − nll(context)``, the log-likelihood of the target given the
context. Optionally a *fluency* term adds the instruction's own mean token negative log-likelihood in its place in
the prompt (its log-perplexity), so substitutions that keep the text readable rank higher.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from promptopt.core._imports import require
from promptopt.core.messages import Messages
from promptopt.models.hf import HFModel
from promptopt.models.hf.vocab import round_trips
from promptopt.models.soft import SoftPromptModel

torch = require("torch", extra="hf", feature="token gradients")

SPAN = "\ue001instruction\ue001"
"""What a prompt's instruction is replaced with when it is rendered for :func:`token_gradients`."""


class SpanModel(SoftPromptModel):
    """``base`` with the tokens of :data:`SPAN` in rendered messages fed from :attr:`embeddings` (one row each).

    :attr:`text` is the instruction the rows stand for: the continuation is tokenized after the real text, as
    :meth:`HFModel.score` would. Template text around the span is tokenized piecewise (a token never straddles the
    instruction's boundary), the approximation a gradient ranking can afford.
    """

    def __init__(self, base: HFModel, n_tokens: int) -> None:
        dim = base.model.get_input_embeddings().embedding_dim
        super().__init__(base, torch.zeros(n_tokens, dim, device=base.device), tag="token-gradients")
        self.text = ""

    def _render(self, messages: Messages) -> tuple[str, list[int]]:
        text, _ = HFModel._render(self, messages)
        ids: list[int] = []
        for i, part in enumerate(text.split(SPAN)):
            if i:
                ids += range(self._first, self._first + self.n_tokens)
            if part:
                ids += self.tokenizer(part, add_special_tokens=False)["input_ids"]
        return text.replace(SPAN, self.text), ids

    def _continuation(self, prompt_text: str, prompt_ids: list[int], continuation: str) -> list[int]:
        real = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        return HFModel._continuation(self, prompt_text, real, continuation)


@dataclass(frozen=True)
class Row:
    """One training example: the messages (instruction rendered as :data:`SPAN`), what the model wrote first
    (``context``: its reasoning and an answer cue, or ``""``), and the gold ``target`` whose loss counts."""

    messages: Messages
    target: str
    context: str = ""


@dataclass(frozen=True)
class GradientPass:
    """The result of :func:`token_gradients`: ``grad`` (positions, vocab) of the objective with respect to the
    one-hot tokens, the task loss, the fluency (mean token NLL of the instruction) and the tokens read."""

    grad: Any
    loss: float
    fluency: float
    tokens: int


def token_gradients(
    base: HFModel, ids: Sequence[int], rows: Sequence[Row], *, eos: bool = False, fluency_weight: float = 0.0
) -> GradientPass:
    """One forward and backward pass over ``rows`` with the instruction ``ids``; the model's weights stay frozen."""
    base.model.requires_grad_(False)
    table = base.model.get_input_embeddings().weight
    one_hot = torch.zeros(len(ids), table.shape[0], device=base.device, dtype=table.dtype)
    one_hot[torch.arange(len(ids)), torch.tensor(list(ids))] = 1.0
    one_hot.requires_grad_(True)
    span = SpanModel(base, len(ids))
    span.text = base.tokenizer.decode(list(ids))
    span.embeddings = one_hot @ table
    plain = [(r.messages, r.context + r.target) for r in rows]
    loss, tokens = span.nll(plain, eos=eos)
    with_context = [(r.messages, r.context) for r in rows if r.context]
    if with_context:  # log p(target | context) = log p(context + target) − log p(context), averaged over rows
        before, more = span.nll(with_context, eos=False)
        loss, tokens = loss - before * len(with_context) / len(rows), tokens + more
    fluency = _fluency(span, one_hot, rows[0].messages)
    objective = loss + fluency_weight * fluency if fluency_weight else loss
    (grad,) = torch.autograd.grad(objective, one_hot)
    return GradientPass(grad.detach().float().cpu(), loss.item(), fluency.item(), tokens)


def _fluency(span: SpanModel, one_hot: Any, messages: Messages) -> Any:
    """The instruction's mean token NLL in its place in ``messages`` (its first token's too, given what precedes
    it); differentiable in ``one_hot`` both as the input and as the target."""
    ids = span._render(messages)[1]
    start = ids.index(span._first)
    seq = torch.tensor([ids[: start + span.n_tokens]], device=span.device)
    out = span.model(inputs_embeds=span.embed(seq))
    logprobs = out.logits[0, start - 1 : start + span.n_tokens - 1].float().log_softmax(-1)
    return -(one_hot.float() * logprobs).sum(-1).mean()


def sample_swaps(
    tokenizer: Any,
    ids: Sequence[int],
    grad: Any,
    *,
    positions: Sequence[int],
    allowed: Any,
    top_k: int,
    n: int,
    rng: random.Random,
    exclude: Collection[tuple[int, ...]] = (),
) -> list[list[int]]:
    """Up to ``n`` distinct single-token swaps of ``ids``: a random position of ``positions``, a random one of the
    ``top_k`` allowed tokens whose gradient entry there is lowest; only sequences that survive the tokenization
    round trip (:func:`~promptopt.models.hf.vocab.round_trips`) and are not in ``exclude``."""
    scores = -grad.clone()
    scores[:, ~allowed] = -float("inf")
    scores[torch.arange(len(ids)), torch.tensor(list(ids))] = -float("inf")  # a swap changes the token
    top = scores.topk(top_k, dim=-1).indices.tolist()
    seen = {tuple(ids), *exclude}
    out: list[list[int]] = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        pos = rng.choice(list(positions))
        new = list(ids)
        new[pos] = rng.choice(top[pos])
        if tuple(new) not in seen and round_trips(tokenizer, new):
            seen.add(tuple(new))
            out.append(new)
    return out


def ranked_swaps(grad: Any, ids: Sequence[int], position: int, allowed: Any) -> list[int]:
    """The allowed tokens at ``position``, best first by the first-order estimate (lowest gradient entry)."""
    scores = -grad[position].clone()
    scores[~allowed] = -float("inf")
    scores[ids[position]] = -float("inf")
    return [int(i) for i in scores.argsort(descending=True) if allowed[int(i)]]
