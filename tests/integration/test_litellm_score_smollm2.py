"""Label scoring over the loopback OpenAI-compatible server serving the embedded SmolLM2 (/v1/completions with
echo + logprobs) predicts exactly what the in-process HFModel predicts, on 24 SST-2 dev examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import promptopt
from promptopt.models import Model, get_model
from promptopt.models.hf import HFModel
from promptopt.models.litellm_score import ChatRenderer
from promptopt.testing.openai_completions import COMPLETIONS_PATHS, ModelServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed"),
]
N = 24


def test_server_label_scoring_matches_in_process_on_sst2(smollm2: Model, smollm2_dir: Path) -> None:
    assert isinstance(smollm2, HFModel)
    task = promptopt.load_task("sst2")
    prompt = task.seed_prompt()
    local = promptopt.evaluate(task, smollm2, prompt, split="dev", limit=N, cache=False)
    with ModelServer(smollm2) as srv:
        model = get_model("litellm:openai/smollm2", api_base=srv.base_url + "/v1", api_key="none",
                          tokenizer=str(smollm2_dir))  # fmt: skip
        remote = promptopt.evaluate(task, model, prompt, split="dev", limit=N, cache=False)
    assert local.mode == remote.mode == "score"
    assert [r.prediction for r in remote.records] == [r.prediction for r in local.records]
    for r, h in zip(remote.records, local.records, strict=True):
        assert r.label_logprobs == pytest.approx(h.label_logprobs, abs=1e-3)
    assert remote.mean == local.mean
    sent = [len(q.body["prompt"]) for q in srv.requests if q.path in COMPLETIONS_PATHS]
    assert sent[0] == 1 and sum(sent[1:]) == N * len(task.labels or ())  # the probe, then every (example, label)
    assert len(sent) - 1 < N  # many labels per request


def test_client_side_chat_template_renders_like_hfmodel(smollm2: Model, smollm2_dir: Path) -> None:
    assert isinstance(smollm2, HFModel)
    task = promptopt.load_task("sst2")
    renderer = ChatRenderer(str(smollm2_dir))
    for example in task.splits["dev"][:4]:
        messages = task.seed_prompt().render(example)
        assert renderer.render(messages) == smollm2._render(messages)[0]
