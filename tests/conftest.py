"""Shared fixtures. Unit tests use only the fake model; nothing here loads weights or touches the network."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptopt import Example, Task, make_task
from promptopt.models import Model
from promptopt.models.cache import promptopt_home
from promptopt.testing import make_toy_task


@pytest.fixture(autouse=True)
def _isolated_promptopt_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the default response cache (``cache=True``) out of the user's ~/.cache during tests."""
    monkeypatch.setenv("PROMPTOPT_HOME", str(tmp_path_factory.mktemp("promptopt_home")))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def toy_task() -> Task:
    """The toy 'spell it backwards' task with a known optimum (see promptopt.testing)."""
    return make_toy_task()


@pytest.fixture
def tmp_run_dir(tmp_path):
    return tmp_path / "run"


SENTIMENT = [
    ("a wonderful, moving film", "positive"),
    ("dull and far too long", "negative"),
    ("i loved every minute", "positive"),
    ("a waste of time", "negative"),
    ("brilliant acting and a clever plot", "positive"),
    ("the plot makes no sense", "negative"),
    ("charming and funny", "positive"),
    ("boring from start to finish", "negative"),
]


def sentiment_examples(prefix: str) -> list[Example]:
    return [Example(id=f"{prefix}-{i}", inputs={"text": t}, target=y) for i, (t, y) in enumerate(SENTIMENT)]


@pytest.fixture
def clf_task() -> Task:
    """A small classification task (labels positive/negative, label_set parser, accuracy)."""
    return make_task(
        name="sentiment",
        template="{{ instruction }}\n\nReview: {{ text }}\nSentiment:",
        instruction="Is the review positive or negative?",
        train=sentiment_examples("train"),
        dev=sentiment_examples("dev"),
        test=sentiment_examples("test"),
        metric="accuracy",
        labels=["positive", "negative"],
    )


# -- integration tests: the embedded model ------------------------------------------------------------------

_USER_PROMPTOPT_HOME = promptopt_home()  # read at import, before any test points $PROMPTOPT_HOME elsewhere


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The user's converted SmolLM2 copy, shared by integration tests (converting the GGUF takes ~20 s)."""
    return _USER_PROMPTOPT_HOME / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path) -> Model:
    """The embedded model in float32 (reproducible scores), loaded once per test session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from promptopt.models.hf import load_smollm2

    return load_smollm2(cache_dir=smollm2_dir, dtype="float32")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """One throwaway PostgreSQL server for the whole test run (promptopt.testing.postgres); a skip without
    PostgreSQL, a failure in CI."""
    from promptopt.testing.postgres import require_postgres

    yield from require_postgres()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> str:
    """A fresh database on the session's PostgreSQL server."""
    from promptopt.testing.postgres import fresh_database

    return fresh_database(postgres_server_url)
