"""Label scoring through an OpenAI-compatible server's /v1/completions, against the loopback server serving the tiny
random Llama in process: the same numbers as HFModel, batching, and the fallback to generation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")

import promptopt  # noqa: E402
from promptopt.core.messages import Message  # noqa: E402
from promptopt.models import ScoreRequest, get_model  # noqa: E402
from promptopt.models.hf import HFModel  # noqa: E402
from promptopt.models.litellm import LiteLLMModel  # noqa: E402
from promptopt.models.litellm_score import ScoringUnsupported, continuation_logprob  # noqa: E402
from promptopt.testing.contract_cases import ANIMALS, COLOURS, animal_task, tiny_model  # noqa: E402
from promptopt.testing.openai_completions import COMPLETIONS_PATHS, ModelServer  # noqa: E402
from promptopt.testing.openai_server import OpenAIServer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFModel:
    model = tiny_model(tmp_path_factory.mktemp("score"))
    assert isinstance(model, HFModel)
    return model


def served(srv: OpenAIServer, tokenizer: Path | None, **options: object) -> LiteLLMModel:
    model = get_model(
        "litellm:openai/tiny", api_base=srv.base_url + "/v1", api_key="sk-test", backoff=0.01,
        tokenizer=str(tokenizer) if tokenizer else None, **options,
    )  # fmt: skip
    assert isinstance(model, LiteLLMModel)
    return model


def requests() -> list[ScoreRequest]:
    labels = ("yes", "no", "a dog", "")  # one-token, multi-token and empty continuations
    return [
        ScoreRequest(messages=(Message("user", f"Is it an animal? word: {w}"),), continuations=labels)
        for w in (*ANIMALS[:5], *COLOURS[:4])
    ] + [ScoreRequest(messages=(Message("system", "Be brief."), Message("user", "cat")), continuations=("yes",))]


def test_server_scores_equal_in_process_scores_and_are_batched(tiny: HFModel) -> None:
    path = Path(tiny.tokenizer.name_or_path)
    with ModelServer(tiny) as srv:
        model = served(srv, path, score_batch=8)
        assert model.capabilities.score  # probed once: one echoed prompt
        remote = model.score(requests())
    local = tiny.score(requests())
    assert all(r.error is None for r in remote)
    assert all(r.logprobs[3] == 0.0 for r in remote[:-1])  # the empty label scores 0.0, as in HFModel
    for r, h in zip(remote, local, strict=True):
        assert r.logprobs == pytest.approx(h.logprobs, abs=1e-4)
        assert r.prompt_tokens == h.prompt_tokens
    completions = [q for q in srv.requests if q.path in COMPLETIONS_PATHS]
    sizes = [len(q.body["prompt"]) for q in completions]
    # probe, then 37 prompts (request x label) in requests of at most 8 that never split a request's labels
    assert sizes[0] == 1 and sorted(sizes[1:]) == [5, 8, 8, 8, 8]
    assert all(q.body["echo"] and q.body["logprobs"] == 1 and q.body["max_tokens"] == 0 for q in completions)


def test_evaluation_over_the_server_predicts_as_in_process(tiny: HFModel) -> None:
    path = Path(tiny.tokenizer.name_or_path)
    task = animal_task()
    with ModelServer(tiny) as srv:
        remote = promptopt.evaluate(task, served(srv, path), split="dev", cache=False)
    local = promptopt.evaluate(task, tiny, split="dev", cache=False)
    assert remote.mode == local.mode == "score"
    assert [r.prediction for r in remote.records] == [r.prediction for r in local.records]
    assert remote.mean == local.mean


def test_a_server_without_completions_falls_back_to_generation(
    tiny: HFModel, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(tiny.tokenizer.name_or_path)
    with OpenAIServer(lambda messages, params: "yes") as srv:  # chat only: /v1/completions is a 404
        model = served(srv, path, max_retries=0)
        result = promptopt.evaluate(animal_task(), model, split="dev", cache=False)
        assert not model.capabilities.score
    assert result.mode == "generate" and result.mean == 0.5  # answers "yes" to 4 animals and 4 colours
    (notice,) = capsys.readouterr().err.strip().splitlines()  # detected once, one line
    assert notice.startswith(f"{srv.base_url}/v1 cannot score labels (HTTPError (status 404): ")
    assert notice.endswith("; generating instead")


def test_a_server_that_echoes_without_logprobs_falls_back(tiny: HFModel, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(tiny.tokenizer.name_or_path)
    with ModelServer(tiny, logprobs=False) as srv:
        model = served(srv, path)
        assert not model.capabilities.score and not model.capabilities.score
        with pytest.raises(NotImplementedError, match="cannot score"):
            model.score(requests())
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot score labels (ScoringUnsupported: the echoed completion has no prompt token logprobs)" in line


def test_without_a_tokenizer_a_model_cannot_score() -> None:
    with OpenAIServer() as srv:
        model = served(srv, None)
        assert not model.capabilities.score
        with pytest.raises(NotImplementedError, match="tokenizer="):
            model.score(requests())
    assert srv.requests == []  # nothing probed


def test_continuation_tokens_are_found_by_text_offset() -> None:
    choice = {"logprobs": {"text_offset": [0, 3, 6, 8, 11], "token_logprobs": [None, -1.0, -2.0, -4.0, -8.0]}}
    # prompt "abcdef" (6 chars) + label "ghijk": tokens at 6 and 8; the one at 11 was generated past the text
    assert continuation_logprob(choice, 6, 11) == (-6.0, 2)
    # a token straddling the prompt's end (3..6 with a 5-char prompt) counts to the continuation
    assert continuation_logprob(choice, 5, 11) == (-7.0, 1)
    with pytest.raises(ScoringUnsupported):
        continuation_logprob({"logprobs": None}, 6, 11)


def test_scoring_fails_over_to_a_healthy_endpoint(tiny: HFModel) -> None:
    path = Path(tiny.tokenizer.name_or_path)
    with ModelServer(tiny, fault=lambda m, p: 500) as dead, ModelServer(tiny) as alive:
        bases = [dead.base_url + "/v1", alive.base_url + "/v1"]
        model = get_model("litellm:openai/tiny", api_base=bases, api_key="sk-test", backoff=0.01,
                          tokenizer=str(path), allowed_fails=1, score_batch=4)  # fmt: skip
        remote = model.score(requests())
    flat = [v for r in remote for v in r.logprobs]
    assert flat == pytest.approx([v for h in tiny.score(requests()) for v in h.logprobs], abs=1e-4)
    # the probe, then half of the first 8 chunks in flight (least busy alternates) before the first 500 came back
    assert not any(q.answered for q in dead.requests) and len(dead.requests) <= 5
