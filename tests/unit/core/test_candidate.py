"""Prompt candidates: content-hash ids, rendering, serialisation and a portable export."""

from __future__ import annotations

import json

import jinja2
import pytest

from promptopt import ConfigError, Example, Prompt
from promptopt.core.candidate import DEFAULT_SYSTEM

TEMPLATE = (
    "{{ instruction }}\n"
    "{% for d in demos %}\nQ: {{ d.question }}\nA: {{ d.answer }}\n{% endfor %}"
    "\nQ: {{ question }}\nA:"
)
DEMOS = (
    Example(id="d1", inputs={"question": "2+2"}, target="4"),
    Example(id="d2", inputs={"question": "capital of France"}, target=["Paris", "paris"]),
)


def prompt(**kw) -> Prompt:
    base = {"instruction": "Answer briefly.", "template": TEMPLATE, "demos": DEMOS}
    return Prompt(**{**base, **kw})


def test_id_is_a_stable_content_hash():
    assert prompt().id == prompt().id
    assert len(prompt().id) == 12
    assert prompt().id == "2615508b4408"  # stable across processes and versions: cache keys and run dirs use it


@pytest.mark.parametrize(
    "change",
    [
        {"instruction": "Answer."},
        {"template": TEMPLATE + " "},
        {"demos": DEMOS[:1]},
        {"demos": DEMOS[::-1]},
        {"system": "Be terse."},
        {"soft_prompt": "adapters/p1"},
        {"demo_format": "turns"},
        {"demo_format": "turns_system"},
    ],
)
def test_id_changes_with_what_the_model_sees(change):
    assert prompt(**change).id != prompt().id


def test_id_ignores_lineage_and_meta():
    p = prompt(parents=("abc",), origin="ape:induce", meta={"step": 3})
    assert p.id == prompt().id
    assert p == prompt()  # equality follows the id's fields


def test_with_instruction_records_the_parent():
    parent = prompt()
    child = parent.with_instruction("Think, then answer.", origin="test", step=2)
    assert child.parents == (parent.id,)
    assert child.origin == "test"
    assert child.meta == {"step": 2}
    assert child.demos == parent.demos and child.template == parent.template
    assert parent.instruction == "Answer briefly."  # frozen: the parent is unchanged


def test_render_gives_system_and_user_messages():
    ex = Example(id="q", inputs={"question": "3+3"}, target="6")
    system, user = prompt().render(ex)
    assert (system.role, system.content) == ("system", DEFAULT_SYSTEM)
    assert user.role == "user"
    assert user.content == "Answer briefly.\n\nQ: 2+2\nA: 4\n\nQ: capital of France\nA: Paris\n\nQ: 3+3\nA:"


def test_dict_round_trip():
    p = prompt(parents=("p0",), origin="x", meta={"k": "v"}, system="S")
    q = Prompt.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p and q.id == p.id
    assert (q.parents, q.origin, dict(q.meta)) == (("p0",), "x", {"k": "v"})
    assert q.demos[1].target == ("Paris", "paris")


def test_export_renders_with_plain_jinja2_exactly_like_prompt_render(tmp_path):
    p = prompt(system="You are a quiz master.")
    out = p.export(tmp_path / "export", extra={"task": "quiz"})
    assert {f.name for f in out.iterdir()} == {
        "template.jinja",
        "demos.json",
        "messages.json",
        "manifest.json",
        "README.md",
    }

    # what the README tells a user to do, with no promptopt involved
    manifest = json.loads((out / "manifest.json").read_text())
    template = jinja2.Template((out / manifest["template"]).read_text())
    demos = json.loads((out / manifest["demos"]).read_text())
    assert manifest["input_variables"] == ["question"]
    assert manifest["task"] == "quiz"
    assert manifest["id"] == p.id
    for question in ("3+3", "who wrote {{ Hamlet }}?", "<b>bold</b> & 'quotes'"):
        ex = Example(id="q", inputs={"question": question}, target="x")
        user = template.render(instruction=manifest["instruction"], demos=demos, **ex.inputs).strip()
        messages = [{"role": "system", "content": manifest["system"]}, {"role": "user", "content": user}]
        assert messages == [m.to_dict() for m in p.render(ex)]


def test_export_then_load(tmp_path):
    p = prompt(parents=("p0",), origin="ape:resample")
    p.export(tmp_path / "e")
    assert Prompt.load(tmp_path / "e") == p
    assert Prompt.load(tmp_path / "e").origin == "ape:resample"
    (tmp_path / "p.json").write_text(json.dumps(p.to_dict()))
    assert Prompt.load(tmp_path / "p.json") == p


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no prompt here"):
        Prompt.load(tmp_path)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Prompt.load(tmp_path / "bad.json")


def render_as_the_export_readme_says(out, inputs) -> list[dict[str, str]]:
    """The exported README's recipe, with plain Jinja2 only."""
    template = jinja2.Template((out / "template.jinja").read_text())
    messages = []
    for m in json.loads((out / "messages.json").read_text()):
        if "template" in m:
            demos = json.loads((out / m["demos"]).read_text()) if m["demos"] else []
            content = template.render(instruction=m["instruction"], demos=demos, **inputs).strip()
        else:
            content = m["content"]
        messages.append({"role": m["role"], "content": content})
    return messages


def test_demos_as_chat_turns_with_the_instruction_in_every_user_turn():
    ex = Example(id="q", inputs={"question": "3+3"}, target="6")
    msgs = [(m.role, m.content) for m in prompt(demo_format="turns").render(ex)]
    assert msgs == [
        ("system", DEFAULT_SYSTEM),
        ("user", "Answer briefly.\n\nQ: 2+2\nA:"),
        ("assistant", "4"),
        ("user", "Answer briefly.\n\nQ: capital of France\nA:"),
        ("assistant", "Paris"),
        ("user", "Answer briefly.\n\nQ: 3+3\nA:"),
    ]


def test_instruction_placement_in_the_first_turn_or_the_system_message():
    ex = Example(id="q", inputs={"question": "3+3"}, target="6")
    first = [m.content for m in prompt(demo_format="turns_first").render(ex)]
    assert first[1] == "Answer briefly.\n\nQ: 2+2\nA:" and first[3] == "Q: capital of France\nA:"
    assert first[5] == "Q: 3+3\nA:"
    system = [m.content for m in prompt(demo_format="turns_system").render(ex)]
    assert system[0] == f"{DEFAULT_SYSTEM}\n\nAnswer briefly." and system[1] == "Q: 2+2\nA:"
    assert system[5] == "Q: 3+3\nA:"


def test_demo_turns_are_a_shared_prefix_of_every_example():
    p = prompt(demo_format="turns")
    a = p.render(Example(id="a", inputs={"question": "1+1"}, target="2"))
    b = p.render(Example(id="b", inputs={"question": "5+5"}, target="10"))
    assert a[:-1] == b[:-1] == p.render_context() and len(a) == 6


def test_without_demos_turns_render_like_inline():
    ex = Example(id="q", inputs={"question": "3+3"}, target="6")
    assert prompt(demos=(), demo_format="turns").render(ex) == prompt(demos=()).render(ex)
    assert prompt(demos=(), demo_format="turns_first").render(ex) == prompt(demos=()).render(ex)


def test_unknown_demo_format_is_refused():
    with pytest.raises(ConfigError, match="unknown demo format 'chat'"):
        prompt(demo_format="chat")


@pytest.mark.parametrize("demo_format", ["inline", "turns", "turns_first", "turns_system"])
def test_export_messages_render_without_promptopt_like_prompt_render(tmp_path, demo_format):
    p = prompt(demo_format=demo_format, system="You are a quiz master.")
    out = p.export(tmp_path / "export")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["demo_format"] == demo_format and manifest["messages"] == "messages.json"
    for question in ("3+3", "who wrote {{ Hamlet }}?"):
        ex = Example(id="q", inputs={"question": question}, target="x")
        assert render_as_the_export_readme_says(out, ex.inputs) == [m.to_dict() for m in p.render(ex)]
    loaded = Prompt.load(out)
    assert loaded == p and loaded.demo_format == demo_format
