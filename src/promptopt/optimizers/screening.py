"""Screening proposer replies: the one place that decides whether a reply becomes a candidate.

Proposer output is untrusted text from a possibly tiny model. :func:`extract_instruction` pulls out a usable
instruction or says why it rejects it; :func:`screen_reply` adds the checks against the run (already seen,
placeholders, chatter, an echoed meta-prompt line, the step size) and measures the edit; :func:`screen_proposals`
turns a batch of replies into child prompts, counting every rejection in the run state. Every optimizer that
takes proposer text screens it here (``pe2``/``apo``/``opro``, ``ape``, ``feedback``, ``structure_search``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt.core.messages import Message
from promptopt.core.template import PromptTemplate

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.run.context import RunState

logger = logging.getLogger(__name__)

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
_CHATTER = re.compile(r"(?<![\w'’])I(?:['’](?:m|ll|ve|d))?(?![\w'’])|(?i:\bprompts?\b)")
"""First person or the word "prompt": a reply addressed to the prompt engineer, not an instruction."""


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


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Screened:
    """One reply after screening: the instruction and its word edit distance to the parent, or why not."""

    instruction: str | None
    edit_words: int = 0
    reason: str | None = None


def screen_reply(
    text: str,
    parent: Prompt,
    *,
    seen: set[str] | frozenset[str],
    max_words: int,
    forbidden: Iterable[str] = (),
    strict: bool = True,
    step_size: int | None = None,
    tags: Sequence[str] = ("prompt",),
    cue: str | None = None,
    meta_prompt: Sequence[Message] | None = None,
) -> Screened:
    """Screen one reply to a meta-prompt about ``parent``; rejections in this order:

    what :func:`extract_instruction` rejects; an instruction in ``seen`` (``duplicate``); with ``strict``, one
    that still contains a template placeholder such as ``<sentence>`` (``placeholder``) or talks to the prompt
    engineer instead of instructing the task model — first person or a mention of "prompt" (``chatter``: "I'm
    ready to help…", "Here's an alternative to the provided prompt"); one that copies a line of the
    ``meta_prompt`` it answers (``echoes_meta_prompt``); and, with ``step_size``, an edit changing more words than
    that (``step_size``). ``strict=False`` (``ape``, ``feedback``) skips the placeholder and chatter checks.
    """
    ext = extract_instruction(text, max_words=max_words, forbidden=forbidden, tags=tags, cue=cue)
    if ext.instruction is None:
        return Screened(None, reason=ext.reason or "invalid")
    instruction = ext.instruction
    edit = word_edit_distance(parent.instruction, instruction)
    placeholders = [f"<{f}>" for f in parent.prompt_template.input_variables] + ["<INS>"]
    if instruction in seen:
        reason: str | None = "duplicate"
    elif strict and any(p.lower() in instruction.lower() for p in placeholders):
        reason = "placeholder"
    elif strict and _CHATTER.search(instruction):
        reason = "chatter"
    elif meta_prompt is not None and _normalized(instruction) in _normalized("\n".join(m.content for m in meta_prompt)):
        reason = "echoes_meta_prompt"
    elif step_size is not None and edit > step_size:
        reason = "step_size"
    else:
        reason = None
    return Screened(None if reason else instruction, edit, reason)


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
    step: int | None = None,
) -> list[Prompt]:
    """Turn proposer replies into child prompts of ``parent`` (:func:`screen_reply`, strict); count every
    rejection in ``state``. Accepted instructions are added to ``seen``. Each child's ``meta`` records the
    ``step`` it is evaluated in (default: the state's), ``edit_words`` (the measured word edit distance to the
    parent) and the matching entry of ``metas``.
    """
    forbidden = list(forbidden)
    out: list[Prompt] = []
    for i, text in enumerate(texts):
        meta_prompt = meta_prompts[i] if meta_prompts is not None else None
        s = screen_reply(
            text,
            parent,
            seen=seen,
            max_words=max_words,
            forbidden=forbidden,
            step_size=step_size,
            tags=tags,
            cue=cue,
            meta_prompt=meta_prompt,
        )
        if s.instruction is None:
            state.reject(s.reason or "invalid")
            logger.debug("proposal rejected (%s): %r", s.reason, text[:300])
            continue
        seen.add(s.instruction)
        extra = dict(metas[i]) if metas is not None else {}
        when = state.step if step is None else step
        out.append(parent.with_instruction(s.instruction, origin=origin, step=when, edit_words=s.edit_words, **extra))
    return out
