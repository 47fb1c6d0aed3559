"""Rule-based paraphrases and the equivalence screen: the rules rewrite without changing what is asked, and
paraphrase screening rejects non-equivalent rewrites (negation flipped, label set changed, different task)."""

from __future__ import annotations

import pytest

from promptopt.prompts.equivalence import Equivalence, constraints, why_not_equivalent
from promptopt.prompts.paraphrase import paraphrase_variants, robust_variants, rule_paraphrases, synonym_swap
from promptopt.testing import make_toy_task

SST2 = "Is the sentiment of this movie review positive or negative?"
TREC = "What type of answer does this question ask for? Answer with one word: description, entity or number."
TFIDF = Equivalence(embedder="tfidf")


def test_rules_rewrite_question_and_imperative_forms_and_keep_labels() -> None:
    rules = dict(rule_paraphrases(SST2, labels=("negative", "positive")))
    assert rules["whether"] == "Determine whether the sentiment of this movie review is positive or negative."
    assert rules["synonyms"] == "Is the sentiment of this movie critique positive or negative?"
    assert rules["suffix"].endswith("Answer with negative or positive.")
    assert rules["whether+polite:please"].startswith("Please determine whether")
    imperative = dict(rule_paraphrases("Classify the review."))
    assert imperative["question"] == "Can you classify the review?"
    assert imperative["synonyms"] == "Categorize the critique."
    assert "Please can you" not in " ".join(t for _, t in rule_paraphrases("Repeat the word."))


def test_rules_reorder_sentences_and_vary_the_answer_verb() -> None:
    rules = dict(rule_paraphrases(TREC, labels=("description", "entity", "number")))
    assert rules["reorder"].startswith("Answer with one word:")
    assert "Respond with one word" in rules["answer:respond"]
    assert len({t for _, t in rule_paraphrases(TREC)}) == len(rule_paraphrases(TREC))


def test_label_words_are_never_swapped() -> None:
    assert synonym_swap("Answer text or review.", protected=("text",)) == "Answer text or critique."
    assert synonym_swap("Nothing to swap here.") is None


def test_every_rule_paraphrase_passes_the_screen() -> None:
    labels = ("description", "entity", "number")
    for source, text in rule_paraphrases(TREC, labels=labels):
        assert why_not_equivalent(TREC, text, labels=labels, bounds=TFIDF) is None, source


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        ("Is the sentiment of this movie review not positive or negative?", "negation_changed"),
        ("Is the sentiment of this movie review positive, neutral or negative?", "labels_changed"),
        ("Is the sentiment of this movie review positive?", "labels_changed"),
        ("Is the sentiment of this movie review positive or negative? Answer in one word only.", "constraints_changed"),
        ("Translate the following movie review from English into French, keeping its meaning.", "labels_changed"),
        ("Positive or negative?", "length"),
    ],
)
def test_paraphrase_screening_rejects_non_equivalent_rewrites(rewrite: str, reason: str) -> None:
    labels = ("negative", "positive")
    assert why_not_equivalent(SST2, rewrite, labels=labels, bounds=TFIDF) == reason


def test_a_different_task_without_labels_is_dissimilar() -> None:
    assert why_not_equivalent("Repeat the word.", "Name the capital city of France.", bounds=TFIDF) == "dissimilar"
    assert why_not_equivalent("Repeat the word.", "Please repeat the word.", bounds=TFIDF) is None


def test_constraints_name_synonymous_phrasings_alike() -> None:
    assert constraints("Reply with just one word.") == constraints("Answer with only a single word.")
    assert constraints('Answer "yes" or "no".') == {"quoted:yes", "quoted:no"}


def test_variants_over_paraphrases_start_with_the_prompt_itself() -> None:
    task = make_toy_task()
    prompt = task.seed_prompt()
    variants = paraphrase_variants(prompt, task, 3, seed=0)
    assert variants[0] is prompt and len(variants) == 3
    assert all(v.template == prompt.template and v.instruction != prompt.instruction for v in variants[1:])
    assert variants == paraphrase_variants(prompt, task, 3, seed=0)
    assert robust_variants(prompt, task, 3, over="paraphrases") == variants
    assert all(v.instruction == prompt.instruction for v in robust_variants(prompt, task, 3, over="formats"))
