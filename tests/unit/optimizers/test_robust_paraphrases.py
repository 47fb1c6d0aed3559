"""The proposer's paraphrases screened by the meta family's screening plus the equivalence checks, and the ``robust``
objective over paraphrases (``robust_over: paraphrases``) in ics (structure_search has its own test file)."""

from __future__ import annotations

import promptopt
from promptopt.models.budget import BudgetTracker
from promptopt.models.client import ModelClient
from promptopt.optimizers.paraphrases import paraphrase_set
from promptopt.optimizers.presets import load_optimizer
from promptopt.optimizers.proposer import Proposer
from promptopt.prompts.equivalence import Equivalence
from promptopt.run.history import History
from promptopt.testing import make_toy_task, toy_model

TFIDF = Equivalence(embedder="tfidf")


def test_proposer_paraphrases_are_screened_then_rules_fill_up() -> None:
    task = make_toy_task()
    replies = [
        "Please repeat the word.",
        "Do not repeat the word.",  # negation flipped
        "Repeat the word and explain your reasoning step by step.",  # a constraint added
        "I'm happy to help: repeat the word.",  # chatter (the meta family's screening)
    ]
    writer = Proposer(
        ModelClient(toy_model(replies), cache=None, budget=BudgetTracker()), temperature=0.9, max_tokens=64
    )
    found = paraphrase_set(task.seed_prompt(), 3, proposer=writer, n_proposals=4, bounds=TFIDF)
    assert found.proposed == 4
    assert found.paraphrases[0].text == "Please repeat the word." and found.paraphrases[0].source == "proposer"
    assert len(found.paraphrases) == 3 and all(p.source != "proposer" for p in found.paraphrases[1:])
    assert found.rejected["negation_changed"] == 1 and found.rejected["constraints_changed"] == 1
    assert found.rejected["chatter"] == 1
    assert "Please repeat the word." not in [p.text for p in found.paraphrases[1:]]  # a duplicate of the proposer's


def test_rules_only_need_no_proposer() -> None:
    found = paraphrase_set(make_toy_task().seed_prompt(), 8, source="rules", bounds=TFIDF)
    assert found.proposed == 0 and found.texts and all(p.source != "proposer" for p in found.paraphrases)


def test_ics_screens_each_candidate_over_paraphrases(tmp_run_dir) -> None:
    opt = load_optimizer(
        "ics", ks=[3], shots=[1], strategies=["random"], aggregations=["vote"], minibatch_size=6,
        robust="mean", robust_over="paraphrases", n_robust_formats=2,
    )  # fmt: skip
    promptopt.optimize(make_toy_task(), opt, toy_model(), run_dir=tmp_run_dir, cache=False, evaluate_test=False)
    screened = [t for t in History.load(tmp_run_dir / "history.jsonl") if t.prompt.origin == "paraphrase"]
    assert screened and all(t.prompt.instruction != make_toy_task().instruction for t in screened)
