"""The prompt candidate: an instruction inside a template, with demos. Frozen and content-addressed."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, get_args

from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message, Messages
from promptopt.core.sampling import InContextSampling
from promptopt.core.template import PromptTemplate

if TYPE_CHECKING:
    from promptopt.core.dspy_values import TaskLike

DEFAULT_SYSTEM = "You are a helpful assistant. Follow the instructions and answer concisely."
EXPORT_FORMAT = 2
DemoFormat = Literal["inline", "turns", "turns_first", "turns_system"]
"""How a prompt shows its demos (see :class:`Prompt`)."""
DEMO_FORMATS: tuple[DemoFormat, ...] = get_args(DemoFormat)
SEARCHED_DEMO_FORMATS: tuple[DemoFormat, ...] = ("inline", "turns")
"""What optimizers that choose demos try by default: inline, and chat turns with the instruction in every user
turn (on SmolLM2-135M the three turn placements scored within 0.02 of each other on average, and turns beat
inline on 4 of 6 tasks: ``benchmarks/results/fewshot_placement.md``)."""
SOFT_PROMPT_WEIGHTS = "adapter_model.safetensors"
"""The weights file of a soft prompt (a PEFT prompt-tuning adapter directory)."""


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """One candidate prompt.

    Rendering for an example gives two chat messages: ``system``, then the user message rendered from
    ``template`` with the example's inputs, ``instruction`` and ``demos``. The id is a hash of everything
    that changes what the model sees (not of ``parents``/``origin``/``meta``).

    ``demo_format`` says how the demos are shown: ``inline`` — inside the one user message, where the template's
    ``{% for d in demos %}`` loop puts them; or as chat turns — before the query, one user message per demo (the
    template rendered with that demo's inputs and no demos) answered by an assistant message (the demo's answer).
    The instruction then goes into every user turn (``turns``), only the first (``turns_first``) or the system
    message (``turns_system``). Demo turns are identical for every example, so backends that reuse a shared
    prefix compute them once.

    With ``ics`` (In-Context Sampling, :mod:`promptopt.prompts.ics`) the prompt stands for K sub-prompts that differ
    only in their demos; the evaluator queries all K and aggregates the answers
    (:func:`promptopt.prompts.ics.render_all`).
    """

    instruction: str
    template: str
    demos: tuple[Example, ...] = ()
    system: str = DEFAULT_SYSTEM
    soft_prompt: str | None = None
    """A PEFT prompt-tuning adapter directory (soft prompt); the id hashes its weights, not its path."""
    ics: InContextSampling | None = None
    """K demo sets and an aggregation rule (then ``demos`` must be empty)."""
    demo_format: DemoFormat = "inline"
    parents: tuple[str, ...] = field(default=(), compare=False)
    origin: str = field(default="seed", compare=False)
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "demos", tuple(self.demos))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if self.ics is not None and self.demos:
            raise ConfigError("an In-Context Sampling prompt takes its demos from ics, not demos.", field="demos")
        if self.demo_format not in DEMO_FORMATS:
            raise ConfigError(
                f"unknown demo format {self.demo_format!r}; use one of {', '.join(DEMO_FORMATS)}.", field="demo_format"
            )

    @property
    def id(self) -> str:
        payload = json.dumps(
            {
                "instruction": self.instruction,
                "template": self.template,
                "demos": [d.to_dict() for d in self.demos],
                "system": self.system,
                "soft_prompt": _soft_prompt_identity(self.soft_prompt),
                # absent for plain prompts, so their ids are what they were before ICS existed
                **({"ics": self.ics.to_dict()} if self.ics is not None else {}),
                **({"demo_format": self.demo_format} if self.demo_format != "inline" else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def prompt_template(self) -> PromptTemplate:
        return _template(self.template)

    def with_instruction(self, instruction: str, *, origin: str, **meta: Any) -> Prompt:
        """A child candidate with a new instruction; records this prompt as its parent."""
        return replace(self, instruction=instruction, parents=(self.id,), origin=origin, meta=meta)

    def demo_variables(self) -> list[dict[str, Any]]:
        return [{**d.inputs, "answer": d.answer} for d in self.demos]

    def render_user(self, inputs: Mapping[str, Any]) -> str:
        """The user message for ``inputs`` with the demos inline (what the template alone renders)."""
        return self.prompt_template.render(instruction=self.instruction, inputs=inputs, demos=self.demo_variables())

    def render(self, example: Example) -> Messages:
        """The chat messages for ``example`` (for an ICS prompt with fixed demo sets: its first sub-prompt's; one
        that picks demos per query renders through :func:`promptopt.prompts.ics.render_all`)."""
        if self.ics is not None:
            if not self.ics.demo_sets:
                raise ConfigError(
                    "this In-Context Sampling prompt picks its demos per query (strategy 'similar'); render it with "
                    "promptopt.prompts.ics.render_all.",
                    field="ics",
                )
            return replace(self, demos=self.ics.demo_sets[0], ics=None).render(example)
        return (*self.render_context(), Message("user", self.render_query(example.inputs)))

    @property
    def _turns(self) -> bool:
        return self.demo_format != "inline" and bool(self.demos)

    def render_context(self) -> Messages:
        """The messages before the query: the system message, then (chat-turn formats) the demo turns."""
        system = self.system
        if self.demo_format == "turns_system" and self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        out = [Message("system", system)]
        if self._turns:
            for i, d in enumerate(self.demos):
                out.append(Message("user", self._turn(d.inputs, with_instruction=self._instruction_in_turn(i))))
                out.append(Message("assistant", d.answer))
        return tuple(out)

    def render_query(self, inputs: Mapping[str, Any]) -> str:
        """The last user message: the query, with the demos inline for ``inline``."""
        if self.demo_format == "inline":
            return self.render_user(inputs)
        return self._turn(inputs, with_instruction=self._query_has_instruction)

    def _instruction_in_turn(self, i: int) -> bool:
        """Whether user turn ``i`` (0 = the first, demo or query) carries the instruction."""
        return self.demo_format == "turns" or (self.demo_format == "turns_first" and i == 0)

    @property
    def _query_has_instruction(self) -> bool:
        return self.demo_format == "inline" or self._instruction_in_turn(len(self.demos) if self._turns else 0)

    def _turn(self, inputs: Mapping[str, Any], *, with_instruction: bool) -> str:
        instruction = self.instruction if with_instruction else ""
        return self.prompt_template.render(instruction=instruction, inputs=inputs, demos=())

    def to_dspy(self, task: TaskLike | None = None) -> Any:
        """This prompt as a ``dspy.Predict`` (instruction and demos; inputs and labels from ``task`` if given):
        :func:`promptopt.core.dspy_values.to_dspy`. Needs the ``dspy`` extra."""
        from promptopt.core.dspy_values import to_dspy

        return to_dspy(self, task)

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instruction": self.instruction,
            "template": self.template,
            "demos": [d.to_dict() for d in self.demos],
            "system": self.system,
            "soft_prompt": self.soft_prompt,
            **({"ics": self.ics.to_dict()} if self.ics is not None else {}),
            **({"demo_format": self.demo_format} if self.demo_format != "inline" else {}),
            "parents": list(self.parents),
            "origin": self.origin,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prompt:
        return cls(
            instruction=d["instruction"],
            template=d["template"],
            demos=tuple(Example.from_dict(x) for x in d.get("demos", ())),
            system=d.get("system", DEFAULT_SYSTEM),
            soft_prompt=d.get("soft_prompt"),
            ics=InContextSampling.from_dict(d["ics"]) if d.get("ics") else None,
            demo_format=d.get("demo_format", "inline"),
            parents=tuple(d.get("parents", ())),
            origin=d.get("origin", "seed"),
            meta=d.get("meta", {}),
        )

    def export(self, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write a self-contained directory (template.jinja, demos.json, messages.json, manifest.json, README.md).

        The result renders with plain Jinja2; promptopt is not needed at run time. ``messages.json`` is the chat
        as the model sees it: literal messages (system, demo turns) and, last, the query message to render from
        ``template.jinja`` (see the exported README).
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "template.jinja").write_text(self.template if self.template.endswith("\n") else self.template + "\n")
        if self.ics is None:  # an ICS prompt is K chats: messages_sets.json, one per demo set (_export_ics)
            (out / "demos.json").write_text(json.dumps(self.demo_variables(), indent=2, ensure_ascii=False) + "\n")
            _write_json(out / "messages.json", self.message_spec("demos.json"))
        manifest = {
            "format": "promptopt-prompt",
            "format_version": EXPORT_FORMAT,
            "id": self.id,
            "system": self.system,
            "instruction": self.instruction,
            "template": "template.jinja",
            "demos": "demos.json" if self.ics is None else None,
            "demo_format": self.demo_format,
            "input_variables": sorted(self.prompt_template.input_variables),
            "soft_prompt": self._export_soft_prompt(out),
            "messages": "messages.json" if self.ics is None else None,
            **(self._export_ics(out) if self.ics is not None else {}),
            **(dict(extra) if extra else {}),
            "promptopt": self.to_dict(),
        }
        _write_json(out / "manifest.json", manifest)
        (out / "README.md").write_text(_EXPORT_README + (_ICS_README if self.ics is not None else ""))
        return out

    def message_spec(self, demos_file: str | None) -> list[dict[str, Any]]:
        """The chat as plain data: literal messages, then the query as ``{"role": "user", "template": …,
        "instruction": …, "demos": <file or null>}`` — render ``template`` with that instruction, those demos
        (``demos_file``, when inline) and the inputs."""
        inline = self.demo_format == "inline" and bool(self.demos)
        return [
            *(m.to_dict() for m in self.render_context()),
            {
                "role": "user",
                "template": "template.jinja",
                "instruction": self.instruction if self._query_has_instruction else "",
                "demos": demos_file if inline else None,
            },
        ]

    def _export_ics(self, out: Path) -> dict[str, Any]:
        """Write the demo sets (or the pool of a per-query strategy) and describe how to aggregate."""
        assert self.ics is not None
        ics = self.ics
        sets = [[{**d.inputs, "answer": d.answer} for d in s] for s in ics.demo_sets]
        pool = [{**d.inputs, "answer": d.answer} for d in ics.pool]
        if sets:
            (out / "demo_sets.json").write_text(json.dumps(sets, indent=2, ensure_ascii=False) + "\n")
            subs = [replace(self, demos=s, ics=None) for s in ics.demo_sets]
            for j, sub in enumerate(subs, 1):
                _write_json(out / f"demos_{j}.json", sub.demo_variables())
            _write_json(
                out / "messages_sets.json", [sub.message_spec(f"demos_{j}.json") for j, sub in enumerate(subs, 1)]
            )
        if pool:
            (out / "demo_pool.json").write_text(json.dumps(pool, indent=2, ensure_ascii=False) + "\n")
        return {
            "ics": {
                "k": ics.k,
                "shots": ics.shots,
                "strategy": ics.strategy,
                "aggregation": ics.aggregation,
                "demo_sets": "demo_sets.json" if sets else None,
                "demo_pool": "demo_pool.json" if pool else None,
                "embedder": ics.embedder if pool else None,
                "temperature": ics.temperature,
            }
        }

    def _export_soft_prompt(self, out: Path) -> str | None:
        """Copy the soft prompt into ``out/soft_prompt`` (a PEFT adapter: ``PeftModel.from_pretrained``)."""
        if self.soft_prompt is None:
            return None
        shutil.copytree(self.soft_prompt, out / "soft_prompt", dirs_exist_ok=True)
        return "soft_prompt"

    @classmethod
    def load(cls, path: str | Path) -> Prompt:
        """A prompt from an export directory, a run directory (its best prompt) or a prompt JSON file."""
        from promptopt.core.exceptions import ConfigError

        p = Path(path)
        for candidate in (p / "manifest.json", p / "best_prompt" / "manifest.json", p):
            if candidate.is_file():
                try:
                    data = json.loads(candidate.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"not valid JSON ({exc.msg}).", source=str(candidate)) from None
                prompt = cls.from_dict(data.get("promptopt", data))
                if data.get("soft_prompt") == "soft_prompt":  # an export: use its own copy of the soft prompt
                    prompt = replace(prompt, soft_prompt=str(candidate.parent / "soft_prompt"))
                return prompt
        raise ConfigError(
            "no prompt here: give an export directory (manifest.json), a run directory or a prompt .json file.",
            source=str(p),
        )


_EXPORT_README = """# Exported prompt

Render it with plain Jinja2 (no promptopt needed). `messages.json` is the chat as the model sees it: literal
messages (the system message and, when the demos are chat turns, one user/assistant pair per demo), then the
query, rendered from `template.jinja`:

```python
import json, jinja2
template = jinja2.Template(open("template.jinja").read())
messages = []
for m in json.load(open("messages.json")):
    if "template" in m:  # the query: instruction ("" when it sits elsewhere), inline demos or none, the inputs
        demos = json.load(open(m["demos"])) if m["demos"] else []
        content = template.render(instruction=m["instruction"], demos=demos, **inputs).strip()
    else:
        content = m["content"]
    messages.append({"role": m["role"], "content": content})
```

`inputs` holds the variables listed in `manifest.json` under `input_variables`; `manifest.json` → `demo_format`
says where the demos are (`inline` in the query, or chat `turns`).
"""

_ICS_README = """
## In-Context Sampling

This prompt is K prompts (`manifest.json` → `ics`), so there is no single `messages.json`: build the chat
once per demo set (`messages_sets.json` holds one `messages.json`-style list per set of `demo_sets.json`, each
rendered as above with its own `demos_<j>.json`), query the model with each, and aggregate the K answers:
`vote` takes the
majority answer; `confidence` sums each label's probability (normalised over the labels) over the K
prompts and takes the largest. With `demo_pool.json` (strategy `similar`) the K sets are picked per
input: embed the inputs with the named embedder, take the K × shots nearest pool items, and deal them
round-robin into K sets (set j gets ranks j, j+K, …), most similar demo last.
"""


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def soft_prompt_digest(path: str | Path) -> str:
    """Digest of a soft-prompt directory's weights (read once per file version)."""
    file = Path(path) / SOFT_PROMPT_WEIGHTS
    try:
        stat = file.stat()
    except OSError:
        raise ConfigError(f"no soft prompt here (no {SOFT_PROMPT_WEIGHTS})", source=str(path)) from None
    return _file_digest(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


def _soft_prompt_identity(path: str | None) -> str | None:
    """What a candidate's id hashes: the soft prompt's weights, or its path if they cannot be read."""
    if path is None:
        return None
    try:
        return "sha256:" + soft_prompt_digest(path)
    except ConfigError:
        return path


@lru_cache(maxsize=1024)
def _file_digest(file: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=512)
def _template(source: str) -> PromptTemplate:
    return PromptTemplate(source)
