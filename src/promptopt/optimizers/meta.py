"""Machinery shared by optimizers that ask a proposer model to write prompts.

Meta-prompts are Jinja2 files in ``promptopt/optimizers/meta_prompts/`` rendered in the sandbox
(:func:`render_meta_prompt`; :func:`render_conversation` for multi-turn ones, where ``<|user|>`` /
``<|assistant|>`` lines of the file start messages; rendered variables never do). Proposer output is untrusted
text from a possibly tiny model:
:func:`extract_instruction` pulls out a usable instruction or says why it rejects it, and
:func:`screen_proposals` turns replies into child prompts, counting every rejection in the run state.

The meta-prompt family (``pe2``, ``apo``, ``opro``) shares one search, :class:`BeamSearchOptimizer`:
beam selection over full-dev scores (:func:`select_beam`), failures from a train batch per parent
(:func:`sample_failures`), racing of children on growing dev minibatches (:mod:`promptopt.optimizers.racing`)
before the full dev split, and the optimization history of a prompt's lineage (:func:`lineage`). Each
member only writes its meta-prompts (:meth:`BeamSearchOptimizer.children`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message
from promptopt.core.template import PromptTemplate, render_string
from promptopt.models.base import GenerationRequest
from promptopt.models.client import ModelClient
from promptopt.optimizers.base import Optimizer
from promptopt.optimizers.planning import affordable, eval_cost, subprompts
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of
from promptopt.run.context import EvalRequest, RunContext, RunState

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.task import Task
    from promptopt.run.history import History, TrialRecord

logger = logging.getLogger(__name__)

PROPOSER_SYSTEM = "You are an expert prompt engineer. Reply with exactly what is asked, nothing else."


@cache
def meta_prompt_source(name: str) -> str:
    return resources.files("promptopt.optimizers").joinpath("meta_prompts", f"{name}.jinja").read_text(encoding="utf-8")


def render_meta_prompt(name: str, **variables: Any) -> str:
    return render_string(meta_prompt_source(name), variables, name=f"meta_prompts/{name}.jinja").strip()


def format_example(ex: Example | Mapping[str, Any], *, answer: str | None = None) -> dict[str, Any]:
    """A demo as the meta-prompts show it: ``input`` text (one line per field) and ``output``."""
    inputs = ex.inputs if isinstance(ex, Example) else ex
    text = str(next(iter(inputs.values()))) if len(inputs) == 1 else "\n".join(f"{k}: {v}" for k, v in inputs.items())
    return {
        "input": text,
        "output": answer if answer is not None else (ex.answer if isinstance(ex, Example) else ""),
    }


_LEADS = re.compile(
    r"^\s*(?:the\s+)?(?:new\s+|improved\s+|revised\s+)?(?:instruction|prompt)\s*(?:was|is)?\s*[:\-–]?\s*",
    re.IGNORECASE,
)


_LEAD_IN_LINE = re.compile(
    r"^\s*(?:#+\s.*|.*\b(?:prompt|instruction|here|revis\w*|improv\w*|refin\w*|edit\w*|updated|new)\b.*:\s*)$",
    re.IGNORECASE,
)
"""A line that only announces what follows (a markdown heading, or 'Here is the revised prompt:')."""
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


_CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>")
"""A chat template's control token (ChatML, Llama 3, Phi, Gemma, Llama 2): never part of an instruction."""


@dataclass(frozen=True)
class Extraction:
    instruction: str | None
    reason: str | None = None
    """Why the output was rejected (``empty``, ``too_long``, ``template_syntax``, ``role_marker``,
    ``echoes_input``)."""


def extract_instruction(
    text: str,
    *,
    max_words: int = 80,
    forbidden: Iterable[str] = (),
    allow_template_syntax: bool = False,
    tags: Sequence[str] = ("prompt",),
    cue: str | None = None,
) -> Extraction:
    """Pull one instruction out of a proposer's reply.

    Takes the text inside the first of ``tags`` found (``<prompt>…</prompt>`` by default; OPRO asks for
    ``<INS>…</INS>``) or, with an answer ``cue`` the meta-prompt ends with (``"New instruction:"``), the
    first line of text after its last occurrence in the reply (a small model often writes a preamble first
    and commentary after), skips
    announcing lines ("Here's the revised prompt:", markdown headings) when more text follows, takes the
    first non-empty paragraph (the first item of a list), strips lead-ins ("The instruction was:", quotes,
    list markers) and rejects empty, over-long, template-breaking output, output with chat-template control
    tokens (``<|im_start|>``, ``[INST]``) or output that merely copies one of the ``forbidden`` strings (e.g. a
    demo input).
    """
    body = text
    for tag in tags:
        m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|$)", text, flags=re.DOTALL | re.IGNORECASE)
        if m:
            body = m.group(1)
            break
    else:
        if cue and (at := body.lower().rfind(cue.lower())) >= 0:
            after = [ln for ln in body[at + len(cue) :].splitlines() if ln.strip().strip("\"'`")]
            body = after[0] if after else ""  # the cue asks for one line; what follows is commentary
    lines = body.strip().splitlines()
    while len(lines) > 1 and (_LEAD_IN_LINE.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)  # "Here's the revised prompt:" / "## Prompt" / blank, when something follows
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
    candidate = paragraphs[0] if paragraphs else ""
    if _LIST_ITEM.match(candidate):
        candidate = candidate.splitlines()[0]  # a list of alternatives: the first one
    candidate = _LEADS.sub("", candidate)
    candidate = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", candidate)
    candidate = " ".join(candidate.split()).strip().strip("\"'`“”‘’").strip()
    if not candidate or not re.search(r"[A-Za-z]", candidate):
        return Extraction(None, "empty")
    if len(candidate.split()) > max_words:
        return Extraction(None, "too_long")
    if not allow_template_syntax and re.search(r"\{\{|\{%|\}\}|%\}", candidate):
        return Extraction(None, "template_syntax")
    if _CONTROL_TOKEN.search(candidate):
        return Extraction(None, "role_marker")
    norm = candidate.lower()
    if any(norm == str(f).strip().lower() for f in forbidden if str(f).strip()):
        return Extraction(None, "echoes_input")
    return Extraction(candidate)


def check_template(template: str, input_fields: Iterable[str]) -> str | None:
    """Why a proposed template cannot be used with the task's inputs, or None if it can."""
    try:
        PromptTemplate(template).check_inputs(input_fields)
    except ValueError as exc:
        return str(exc)
    return None


class Proposer:
    """Sends meta-prompts to the proposer model; every sample gets a fresh, deterministic sample index
    so reruns with the same seed replay from the cache."""

    def __init__(
        self, client: ModelClient, *, temperature: float, max_tokens: int, system: str = PROPOSER_SYSTEM
    ) -> None:
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self._sample = 0

    def ask(self, prompts: Sequence[str]) -> list[str]:
        """One reply per meta-prompt (failed calls give an empty reply, which extraction rejects)."""
        requests = []
        for p in prompts:
            self._sample += 1
            requests.append(
                GenerationRequest(
                    messages=(Message("system", self.system), Message("user", p)),
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    sample=self._sample,
                )
            )
        return [c.text if not c.error else "" for c in self.client.generate(requests)]

    def ask_chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int | None = None) -> list[str]:
        """Like :meth:`ask` for multi-turn meta-prompts (the system message is prepended)."""
        requests = []
        for conv in conversations:
            self._sample += 1
            requests.append(
                GenerationRequest(
                    messages=(Message("system", self.system), *conv),
                    max_tokens=max_tokens or self.max_tokens,
                    temperature=self.temperature,
                    sample=self._sample,
                )
            )
        return [c.text if not c.error else "" for c in self.client.generate(requests)]


def word_edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance: how many words an edit inserted, deleted or replaced."""
    x, y = a.split(), b.split()
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i]
        for j, wy in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Failure:
    """A dev example the prompt got wrong, as meta-prompts show it."""

    example: Example
    prediction: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        shown = format_example(self.example)
        return {**shown, "prediction": self.prediction if self.prediction is not None else f"(no answer: {self.error})"}


def sample_failures(record: TrialRecord, examples: Sequence[Example], k: int, rng: random.Random) -> list[Failure]:
    """Up to ``k`` failures of ``record`` (API errors excluded), sampled with ``rng`` in a stable order."""
    if record.result is None or k <= 0:
        return []
    by_id = {ex.id: ex for ex in examples}
    wrong = [r for r in record.result.failures() if r.example_id in by_id]
    picked = rng.sample(wrong, min(k, len(wrong)))
    return [Failure(by_id[r.example_id], r.prediction, r.error) for r in picked]


# -- the meta-prompt family (pe2, apo, opro): screening, beam, history, beam search with racing --------

_ROLE_MARK = re.compile(r"<\|(system|user|assistant)\|>")
_SECRET = secrets.token_hex(8)
"""What the file's role markers carry while the variables render (per process), so a ``<|user|>`` in the
variables (data rows, instructions, the proposer's own replies) stays text and cannot start a message."""
_TURN = re.compile(rf"<\|{_SECRET}:(system|user|assistant)\|>")


@cache
def _conversation_source(name: str) -> str:
    return _ROLE_MARK.sub(lambda m: f"<|{_SECRET}:{m[1]}|>", meta_prompt_source(name))


def render_conversation(name: str, **variables: Any) -> tuple[Message, ...]:
    """Render a meta-prompt into chat messages: a ``<|user|>`` or ``<|assistant|>`` in the file starts a message.

    Text before the first marker is a user message; adjacent messages of one role are merged and runs
    of blank lines collapsed, so ``{% if %}`` blocks can drop whole turns. Markers come from the file only:
    they are swapped for a secret before the variables are rendered in.
    """
    source = _conversation_source(name)
    parts = _TURN.split(render_string(source, variables, name=f"meta_prompts/{name}.jinja").strip())
    turns = [("user", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    out: list[Message] = []
    for role, raw in turns:
        content = re.sub(r"\n{3,}", "\n\n", raw).strip()
        if not content:
            continue
        if out and out[-1].role == role:
            out[-1] = Message(role, f"{out[-1].content}\n\n{content}")
        else:
            out.append(Message(role, content))
    return tuple(out)


def full_template(prompt: Prompt, *, instruction: str | None = None) -> str:
    """PE2's context specification: the user message the instruction sits in, each input shown as ``<field>``."""
    fields = sorted(prompt.prompt_template.input_variables)
    return prompt.prompt_template.render(
        instruction=prompt.instruction if instruction is None else instruction,
        inputs={f: f"<{f}>" for f in fields},
        demos=prompt.demo_variables(),
    )


_CHATTER = re.compile(r"(?<![\w'’])I(?:['’](?:m|ll|ve|d))?(?![\w'’])|(?i:\bprompts?\b)")
"""First person or the word "prompt": a reply addressed to the prompt engineer, not an instruction."""


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def screen_proposals(
    texts: Sequence[str],
    parent: Prompt,
    state: RunState,
    *,
    origin: str,
    seen: set[str],
    max_words: int,
    forbidden: Iterable[str] = (),
    step_size: int | None = None,
    tags: Sequence[str] = ("prompt",),
    cue: str | None = None,
    metas: Sequence[Mapping[str, Any]] | None = None,
    meta_prompts: Sequence[Sequence[Message]] | None = None,
) -> list[Prompt]:
    """Turn proposer replies into child prompts of ``parent``; count every rejection in ``state``.

    Rejects what :func:`extract_instruction` rejects, instructions already in ``seen`` (``duplicate``;
    accepted ones are added), instructions that still contain a template placeholder such as
    ``<sentence>`` (``placeholder``), replies that talk to the prompt engineer instead of instructing the
    task model — first person or a mention of "prompt" (``chatter``: "I'm ready to help…", "Here's an
    alternative to the provided prompt"), replies that copy a line of the meta-prompt they answer
    (``echoes_meta_prompt``, with ``meta_prompts``) and, with ``step_size``, edits changing more words
    than that (``step_size``). Each child's ``meta`` records the step, ``edit_words`` (the measured word edit
    distance to the parent) and the matching entry of ``metas``.
    """
    placeholders = [f"<{f}>" for f in parent.prompt_template.input_variables] + ["<INS>"]
    out: list[Prompt] = []
    for i, text in enumerate(texts):
        ext = extract_instruction(text, max_words=max_words, forbidden=forbidden, tags=tags, cue=cue)
        instruction, edit = ext.instruction or "", 0
        reason: str | None = ext.reason or "invalid" if ext.instruction is None else None
        if reason is None:
            edit = word_edit_distance(parent.instruction, instruction)
            source = "\n".join(m.content for m in meta_prompts[i]) if meta_prompts is not None else None
            reason = _rejection(instruction, seen, placeholders, source, edit, step_size)
        if reason is not None:
            state.reject(reason)
            logger.debug("proposal rejected (%s): %r", reason, text[:300])
            continue
        seen.add(instruction)
        extra = dict(metas[i]) if metas is not None else {}
        out.append(parent.with_instruction(instruction, origin=origin, step=state.step, edit_words=edit, **extra))
    return out


def _rejection(
    instruction: str,
    seen: set[str],
    placeholders: Sequence[str],
    meta_prompt: str | None,
    edit: int,
    step_size: int | None,
) -> str | None:
    if instruction in seen:
        return "duplicate"
    if any(p.lower() in instruction.lower() for p in placeholders):
        return "placeholder"
    if _CHATTER.search(instruction):
        return "chatter"
    if meta_prompt is not None and _normalized(instruction) in _normalized(meta_prompt):
        return "echoes_meta_prompt"
    if step_size is not None and edit > step_size:
        return "step_size"
    return None


def select_beam(history: History, k: int) -> list[TrialRecord]:
    """The ``k`` best full-dev candidates so far, best first (ties: the earlier trial)."""
    return sorted(history.full(), key=lambda r: (-r.mean, r.trial))[:k]


def score_on(record: TrialRecord, examples: Sequence[Example]) -> float | None:
    """``record``'s mean score on ``examples`` from its per-example results (None if any is missing)."""
    if record.result is None:
        return None
    scores = record.result.by_example
    if not examples or any(ex.id not in scores for ex in examples):
        return None
    return sum(scores[ex.id] for ex in examples) / len(examples)


@dataclass(frozen=True)
class Edit:
    """One accepted edit on a prompt's lineage, as the optimization history ("momentum") shows it."""

    step: int
    before: str
    after: str
    words: int
    score_before: float
    score_after: float


def lineage(record: TrialRecord, history: History, *, limit: int) -> list[Edit]:
    """The last ``limit`` edits that led to ``record`` (oldest first), with full-dev scores before/after.

    ``step`` is the child's ``meta["round"]`` (the optimizer's step) when recorded, else its trial step.
    """
    by_id = {r.prompt.id: r for r in history.full()}
    edits: list[Edit] = []
    cur = record
    while cur.prompt.parents and (parent := by_id.get(cur.prompt.parents[0])) is not None and len(edits) < limit:
        words = cur.prompt.meta.get("edit_words")
        edits.append(
            Edit(
                step=int(cur.prompt.meta.get("round", cur.step)),
                before=parent.prompt.instruction,
                after=cur.prompt.instruction,
                words=int(words)
                if words is not None
                else word_edit_distance(parent.prompt.instruction, cur.prompt.instruction),
                score_before=parent.mean,
                score_after=cur.mean,
            )
        )
        cur = parent
    return edits[::-1]


@dataclass(frozen=True, kw_only=True)
class SearchConfig(RacingConfig):
    """Settings of the beam search shared by the meta-prompt family."""

    n_steps: int = field(default=4, metadata={"min": 1, "help": "optimization steps; each expands the beam once"})
    beam_size: int = field(default=2, metadata={"min": 1, "help": "best full-dev candidates a step builds on"})
    minibatch_size: int = field(
        default=10, metadata={"min": 0, "help": "dev examples in the first race stage before full dev (0: no race)"}
    )
    n_promote: int = field(default=2, metadata={"min": 1, "help": "children per step promoted to full dev"})
    min_gain: float | None = field(
        default=0.0,
        metadata={"help": "promote only children beating their parent on the race by more than this (None: all)"},
    )
    temperature: float = field(default=0.7, metadata={"min": 0.0, "help": "proposer sampling temperature"})
    max_tokens: int = field(default=96, metadata={"min": 1, "help": "proposer reply length for a new prompt"})
    max_words: int = field(default=50, metadata={"min": 1, "help": "longer proposals are rejected"})


FailureSplit = Literal["train", "dev"]


@dataclass(frozen=True, kw_only=True)
class FailureSearchConfig(SearchConfig):
    """:class:`SearchConfig` plus where the failures shown to the proposer come from."""

    batch_size: int = field(default=2, metadata={"min": 1, "help": "failures shown per proposal"})
    failure_split: FailureSplit = field(
        default="train",
        metadata={"help": "'train': run each parent on a train batch to find failures; 'dev': reuse its dev errors"},
    )
    failure_pool: int = field(default=16, metadata={"min": 1, "help": "train examples each parent is run on"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.failure_split not in ("train", "dev"):
            raise ConfigError(f"must be 'train' or 'dev', got {self.failure_split!r}", field="failure_split")


@dataclass(frozen=True)
class StepPlan:
    """One step of :class:`BeamSearchOptimizer` as the budget plan sizes it: the first ``parents`` of the beam,
    the config :meth:`~BeamSearchOptimizer.children` runs with (the run's, or one asking fewer proposals), and
    the step's worst case (every proposal accepted, every child racing every stage)."""

    parents: int
    config: SearchConfig
    children: int
    proposer_calls: int
    cost: int
    """Planned calls: failure runs of new parents, proposer calls, races and confirmations on full dev."""


class BeamSearchOptimizer(Optimizer):
    """Beam search over instructions with minibatch racing, shared by pe2, apo and opro.

    Each step: take the ``beam_size`` best full-dev candidates so far (the seed included: a child never
    replaces its parent unless it scores higher — PE2's back-tracking), optionally run each new parent
    on a train batch to collect failures (``uses_failures``), ask :meth:`children` for new candidates,
    race them on a fresh dev sample (stages of ``minibatch_size``, x ``race_growth``, ... below the dev
    size; children significantly worse than the leader — the parents take part for free — are dropped
    between stages) and evaluate the ``n_promote`` best survivors on the full dev split. A child is only
    promoted if it beats its parent by more than ``min_gain`` on the race examples (the parent's
    per-example dev results give that score for free). ``race_stages=1`` races on one fixed minibatch.
    Stops after ``n_steps`` or when a prompt scores 1.0 on dev. Subclasses implement :meth:`children` only;
    children record the optimization step (``meta["round"]``) and the measured edit size
    (``meta["edit_words"]``).

    Budget plan (:mod:`promptopt.optimizers.planning`): before each step, its worst case — failure runs of
    new parents, proposer calls, every child racing every stage, and the confirmations of the ``n_promote``
    best on full dev — must fit in the planned calls left. If it does not, the step is shrunk to the largest
    that fits (fewer parents, fewer proposals: :meth:`step_knobs`, :meth:`step_shape`); if not even one
    parent with one child fits, the search ends ("budget planned out"). So promoted children are always
    confirmed on full dev, and a budget below :meth:`min_calls` is refused before anything is spent.
    """

    Config = SearchConfig
    config: SearchConfig
    uses_proposer = True
    uses_failures: ClassVar[bool] = False
    proposer_calls_per_child: ClassVar[int] = 1
    """Proposer calls a child costs, for a member :meth:`step_shape` does not know (one child per parent is then
    assumed); pe2, apo and opro are described there from their :meth:`children`."""

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        c = self.config
        self.proposer = Proposer(ctx.proposer, temperature=c.temperature, max_tokens=c.max_tokens)
        self.forbidden = frozenset(str(v) for ex in (*ctx.task.train, *ctx.task.dev) for v in ex.inputs.values())
        self.seen: set[str] = set()
        self._phase: Literal["select", "expand", "promote"] = "select"
        self._awaiting: Literal["failures", "race"] | None = None
        self._round = 0
        self._parents: list[TrialRecord] = []
        self._step_config: SearchConfig = c
        self._failure_runs: dict[str, TrialRecord] = {}
        self._children: list[Prompt] = []
        self._minibatch: tuple[Example, ...] = ()
        self._race: Race | None = None
        self.racing = RaceTotals()

    def min_calls(self, task: Task) -> int:
        """The smallest first step's worst case: the seed's failure run (``failure_split="train"``), the
        proposer calls of one child, its race (every stage) and its confirmation on full dev (the race examples
        counted again: without a cache they are paid twice)."""
        n_dev = len(task.dev)
        plans = self._step_plans([task.seed_prompt()], set(), len(task.train), n_dev, lambda k: k * n_dev)
        return min((p.cost for p in plans), default=0)

    # -- for subclasses ---------------------------------------------------------------------------
    def children(self, parents: Sequence[TrialRecord], state: RunState) -> list[Prompt]:
        """New candidates built from ``parents`` (best first); screen them with :meth:`screen`."""
        raise NotImplementedError

    def step_knobs(self) -> dict[str, int]:
        """The config fields that set how many proposals a step asks for, each with the least the budget plan
        may shrink it to (together: one child per parent). Members with such fields override this."""
        return {}

    def step_shape(self, n_parents: int, config: SearchConfig) -> tuple[int, int]:
        """(children, proposer calls) of a step on ``n_parents`` beam parents with ``config``, worst case (every
        proposal accepted). Default: one child per parent at ``proposer_calls_per_child`` calls each."""
        return n_parents, n_parents * self.proposer_calls_per_child

    def failure_batch(self, parent: TrialRecord) -> list[Failure]:
        """A fresh sample of ``batch_size`` failures of ``parent`` (from its train batch or its dev results)."""
        c = self.config
        if not isinstance(c, FailureSearchConfig):
            raise TypeError(f"{type(self).__name__}.failure_batch needs a FailureSearchConfig")
        if c.failure_split == "train":
            record, examples = self._failure_runs.get(parent.prompt.id), self.ctx.task.train
        else:
            record, examples = parent, self.ctx.task.dev
        return sample_failures(record, examples, c.batch_size, self.ctx.rng) if record is not None else []

    def screen(
        self,
        texts: Sequence[str],
        parent: Prompt,
        state: RunState,
        *,
        origin: str,
        step_size: int | None = None,
        tags: Sequence[str] = ("prompt",),
        cue: str | None = None,
        metas: Sequence[Mapping[str, Any]] | None = None,
        meta_prompts: Sequence[Sequence[Message]] | None = None,
    ) -> list[Prompt]:
        """:func:`screen_proposals` with this run's seen set, word limit and forbidden inputs."""
        metas = [{"round": self._round, **m} for m in (metas if metas is not None else [{}] * len(texts))]
        return screen_proposals(
            texts,
            parent,
            state,
            origin=origin,
            seen=self.seen,
            max_words=self.config.max_words,
            forbidden=self.forbidden,
            step_size=step_size,
            tags=tags,
            cue=cue,
            metas=metas,
            meta_prompts=meta_prompts,
        )

    # -- the protocol -----------------------------------------------------------------------------
    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        c = self.config
        while True:
            if self._phase == "select":
                if self._round >= c.n_steps:
                    return []
                beam = select_beam(state.history, c.beam_size) or [state.seed_record]
                plan = self._plan_step(beam, state)
                if plan is None:
                    return []
                self._round += 1
                self._parents, self._step_config = beam[: plan.parents], plan.config
                self._phase = "expand"
                runs = self._failure_requests()
                if runs:
                    self._awaiting = "failures"
                    return runs
            if self._phase == "expand":
                self.seen = {r.prompt.instruction for r in state.history}
                kids = self._affordable_children(self._children_of(self._parents, state))
                self._phase = "select"
                if not kids:
                    continue
                dev = list(self.ctx.task.dev)
                sizes = self._race_sizes(len(dev))
                if not sizes:
                    self._awaiting = None
                    return kids
                self._minibatch = tuple(self.ctx.rng.sample(dev, sizes[-1]))
                self._children = kids
                self._race = Race(
                    kids, self._minibatch, sizes, alpha=c.race_alpha, incumbents=incumbents_of(self._parents)
                )
                self._phase, self._awaiting = "promote", "race"
            assert self._race is not None
            stage = self._race.requests()
            if stage:
                return stage
            self._phase, self._awaiting = "select", None
            self._count_race(self._race)
            promoted = self._promote(state)
            if promoted:
                return promoted

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None:
        for r in records:
            if r.full or r.result is None:
                continue
            if self._awaiting == "failures":
                self._failure_runs[r.prompt.id] = r
            elif self._awaiting == "race" and self._race is not None:
                self._race.record(r.prompt, r.result)

    def should_stop(self, state: RunState) -> bool:
        if state.best().mean >= 1.0:
            state.stop_reason = "a prompt scored 1.0 on dev"
            return True
        return False

    # -- budget plan ------------------------------------------------------------------------------
    def _race_sizes(self, n_dev: int) -> list[int]:
        c = self.config
        return c.race_sizes(c.minibatch_size, n_dev) if c.minibatch_size else []

    def _step_plans(
        self,
        parents: Sequence[Prompt],
        failure_runs_done: set[str],
        n_train: int,
        n_dev: int,
        confirmation: Callable[[int], int],
    ) -> list[StepPlan]:
        """Every step shape from the full one (all ``parents``, the run's config) down to one parent with the
        :meth:`step_knobs` at their least, with its worst-case cost; ``confirmation(k)`` is the planned cost of
        confirming a raced child with ``k`` sub-prompts per example on full dev."""
        c = self.config
        k = max((subprompts(p) for p in parents), default=1)
        sizes = self._race_sizes(n_dev)
        pool = min(c.failure_pool, n_train) if isinstance(c, FailureSearchConfig) else 0
        runs = self.uses_failures and isinstance(c, FailureSearchConfig) and c.failure_split == "train"
        # a child's race (every stage) and the confirmations reserved for the best; no race: full dev for each
        per_child, confirm = (k * sizes[-1], confirmation(k)) if sizes else (k * n_dev, 0)
        knobs = self.step_knobs()
        current = dataclasses.asdict(c)
        ranges = [range(current[name], min(least, current[name]) - 1, -1) for name, least in knobs.items()]
        plans: list[StepPlan] = []
        for n in range(len(parents), 0, -1):
            failures = sum(eval_cost(p, pool) for p in parents[:n] if runs and p.id not in failure_runs_done)
            for values in itertools.product(*ranges):
                config = dataclasses.replace(c, **dict(zip(knobs, values, strict=True))) if knobs else c
                kids, calls = self.step_shape(n, config)
                if kids >= 1:
                    cost = failures + calls + kids * per_child + min(c.n_promote, kids) * confirm
                    plans.append(StepPlan(n, config, kids, calls, cost))
        return plans

    def _confirmation(self, k: int) -> int:
        sizes = self._race_sizes(len(self.ctx.task.dev))
        return self.ctx.confirmation_cost(sizes[-1] if sizes else 0, k)

    def _plan_step(self, beam: Sequence[TrialRecord], state: RunState) -> StepPlan | None:
        """The largest step on ``beam`` (most children, then most parents, then the cheapest) whose worst case
        fits in the planned calls left; None, with the stop reason set, when not even the smallest does."""
        task = self.ctx.task
        prompts = [r.prompt for r in beam]
        plans = self._step_plans(prompts, set(self._failure_runs), len(task.train), len(task.dev), self._confirmation)
        if not plans:
            return StepPlan(len(beam), self.config, 0, 0, 0)  # nothing to shrink: children() decides
        left = self.ctx.calls_left()
        if left is None:
            return plans[0]
        fitting = [p for p in plans if p.cost <= left]
        if not fitting:
            smallest = min(plans, key=lambda p: p.cost)
            state.stop_reason = (
                f"budget planned out: {left} call{'s' * (left != 1)} left, the smallest step "
                f"({smallest.children} child{'ren' * (smallest.children != 1)} of 1 parent, worst case with "
                f"the confirmation on full dev) needs {smallest.cost}"
            )
            logger.info("step %d: %s", self._round + 1, state.stop_reason)
            return None
        plan = max(fitting, key=lambda p: (p.children, p.parents, -p.cost))
        if plan is not plans[0]:
            logger.info(
                "step %d shrunk to the budget: %d of %d parents, %d of %d children (%d of %d planned calls)",
                self._round + 1,
                plan.parents,
                plans[0].parents,
                plan.children,
                plans[0].children,
                plan.cost,
                plans[0].cost,
            )
        return plan

    def _children_of(self, parents: Sequence[TrialRecord], state: RunState) -> list[Prompt]:
        """:meth:`children` with the step's planned config (the run's, or a shrunk one)."""
        config, self.config = self.config, self._step_config
        try:
            return self.children(parents, state)
        finally:
            self.config = config

    def _affordable_children(self, kids: list[Prompt]) -> list[Prompt]:
        """The children whose race and confirmation still fit (all of them when :meth:`step_shape` is right: the
        step was planned for its worst case; a guard for members that under-state it)."""
        if not kids:
            return kids
        n_dev = len(self.ctx.task.dev)
        sizes = self._race_sizes(n_dev)
        if sizes:
            n_promote = self.config.n_promote

            def reserve(chosen: Sequence[Prompt]) -> int:
                return min(n_promote, len(chosen)) * self._confirmation(max(subprompts(p) for p in chosen))

            fits = affordable(kids, self.ctx.calls_left(), lambda p: eval_cost(p, sizes[-1]), reserve)
        else:  # no race: each child is evaluated on full dev, which is its confirmation
            fits = affordable(kids, self.ctx.calls_left(), lambda p: eval_cost(p, n_dev), lambda _: 0)
        if len(fits) < len(kids):
            logger.warning(
                "%d of %d children left out: the step cost more than planned", len(kids) - len(fits), len(kids)
            )
        return fits

    # -- internals --------------------------------------------------------------------------------
    def _failure_requests(self) -> list[EvalRequest]:
        c = self.config
        if not self.uses_failures or not isinstance(c, FailureSearchConfig) or c.failure_split != "train":
            return []
        train = list(self.ctx.task.train)
        out = []
        for p in self._parents:
            if p.prompt.id not in self._failure_runs:  # each parent is run on one train batch, once
                out.append(EvalRequest(p.prompt, tuple(self.ctx.rng.sample(train, min(c.failure_pool, len(train))))))
        return out

    def _count_race(self, race: Race) -> None:
        summary = self.racing.add(race)
        logger.info(
            "race %d: %d of %d children dropped early; %d evaluations saved so far",
            self.racing.races,
            summary["dropped"],
            summary["candidates"],
            self.racing.saved,
        )

    def _promote(self, state: RunState) -> list[Prompt]:
        c = self.config
        assert self._race is not None
        full = {r.prompt.id: r for r in state.history.full()}
        raced = dict((p.id, score) for p, score in self._race.ranking())  # survivors (rendered, not dropped)
        ranked: list[tuple[float, int, Prompt]] = []
        for i, kid in enumerate(self._children):
            if kid.id not in raced:
                continue  # dropped by the race, or failed to render
            score = raced[kid.id]
            parent = full.get(kid.parents[0]) if kid.parents else None
            base = score_on(parent, self._minibatch) if parent is not None else None
            if c.min_gain is not None and base is not None and score <= base + c.min_gain + 1e-9:
                continue
            ranked.append((-score, i, kid))
        return [kid for _, _, kid in sorted(ranked)[: c.n_promote]]
