"""The evaluator benchmark's pure helpers and report (benchmarks/bench_evaluator.py) on synthetic rounds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_evaluator as bench


def test_chunks_cover_every_item_once_in_order() -> None:
    items = list(range(10))
    parts = bench.chunks(items, 3)
    assert [len(p) for p in parts] == [3, 3, 4]
    assert [x for p in parts for x in p] == items


def test_rotated_moves_the_first_leg_each_round() -> None:
    legs = ["a", "b", "c"]
    assert [bench.rotated(legs, r)[0] for r in range(4)] == ["a", "b", "c", "a"]
    assert sorted(bench.rotated(legs, 2)) == legs


def test_cut_at_stop_keeps_text_before_the_first_stop_string() -> None:
    assert bench.cut_at_stop("hot\ncold", ["\n"]) == "hot"
    assert bench.cut_at_stop("a.b;c", [";", "."]) == "a"
    assert bench.cut_at_stop("plain", ["\n", ""]) == "plain"


def test_run_tokens_counts_the_shared_prefix_once() -> None:
    ids = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]
    assert bench.run_tokens(ids, extra=7) == 2 + (2 + 3 + 1) + 7
    assert bench.run_tokens([[1, 2]], extra=0) == 2
    assert bench.run_tokens([], extra=3) == 3


def rounds(seconds: dict[str, list[float]]) -> list[dict[str, Any]]:
    legs = list(seconds)
    n_rounds = len(next(iter(seconds.values())))
    return [
        {
            "round": r,
            "n": 2,
            "order": bench.rotated(legs, r),
            "load": [1.0, 1.5],
            "legs": {
                k: {
                    "n": 2,
                    "seconds": seconds[k][r],
                    "calls": 4 if k == "naive_score" else 2,
                    "tokens": 100,
                    **({"warm": {"seconds": 0.001, "calls": 0}} if k.startswith("promptopt") else {}),
                }
                for k in legs
            },
        }
        for r in range(n_rounds)
    ]


def test_ratio_stats_are_per_round_ratios_on_the_same_chunk() -> None:
    rs = rounds({"fast": [1.0, 2.0, 1.0], "slow": [4.0, 4.0, 10.0]})
    stats = bench.ratio_stats(rs, "fast", "slow")
    assert stats["rounds"] == [4.0, 2.0, 10.0]
    assert (stats["median"], stats["min"], stats["max"]) == (4.0, 2.0, 10.0)


def test_agreement_counts_equal_fields_on_common_ids() -> None:
    a = {"x": {"prediction": "pos"}, "y": {"prediction": "neg"}, "z": {"prediction": None}}
    b = {"x": {"prediction": "pos"}, "y": {"prediction": "pos"}}
    assert bench.agreement(a, b, "prediction") == {"same": 1, "n": 2}


def record(prediction: str | None, score: float, logprobs: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"output": prediction, "prediction": prediction, "score": score}
    if logprobs is not None:
        out["logprobs"] = logprobs
    return out


@pytest.fixture
def task_report() -> dict[str, Any]:
    seconds = {
        "naive_generate": [2.0, 2.0],
        "promptopt_generate": [0.5, 0.4],
        "dspy": [6.0, 8.0],
        "naive_score": [4.0, 4.0],
        "promptopt_score": [0.4, 0.5],
    }
    ids = ["e0", "e1", "e2", "e3"]
    gen = {i: record("pos" if i != "e3" else None, 1.0 if i == "e0" else 0.0) for i in ids}
    score = {i: record("pos", 1.0 if i == "e0" else 0.0, [-0.5, -1.0]) for i in ids}
    scored_po = {**score, "e3": record("neg", 0.0, [-1.0, -0.5 + 1e-6])}
    return {
        "task": "toy",
        "n": 4,
        "demos": 2,
        "max_tokens": 4,
        "stop": ["\n"],
        "labels": ["pos", "neg"],
        "same_prompt_tokens": True,
        "rounds": rounds(seconds),
        "examples": {
            "naive_generate": gen,
            "promptopt_generate": gen,
            "dspy": {i: record("pos", 1.0) for i in ids},
            "naive_score": score,
            "promptopt_score": scored_po,
        },
    }


def test_summarize_gives_like_with_like_ratios_and_agreement(task_report: dict[str, Any]) -> None:
    s = bench.summarize(task_report, params=100, peak=1.0)
    assert s["ratios"]["promptopt_generate/naive_generate"]["rounds"] == [4.0, 5.0]
    assert s["ratios"]["promptopt_score/naive_score"]["median"] == pytest.approx(9.0)
    assert s["ratios"]["naive_generate/dspy"]["rounds"] == [3.0, 4.0]
    assert "promptopt_score/naive_generate" not in s["ratios"]  # no unlike pairs
    assert s["label_agreement"] == {"same": 3, "n": 4}
    assert s["generation_agreement"]["output"] == {"same": 4, "n": 4}
    legs = s["legs"]
    assert legs["naive_generate"]["unparsed"] == 1
    assert legs["dspy"]["accuracy"] == 1.0
    assert legs["naive_score"]["calls"] == 8
    assert legs["promptopt_score"]["warm"]["calls"] == 0


def test_markdown_names_each_ratio_and_each_sections_run(task_report: dict[str, Any], tmp_path: Path) -> None:
    task_report["summary"] = bench.summarize(task_report, params=100, peak=1.0)
    run = {
        "commit": "0123456789abcdef",
        "dirty": False,
        "command": "python benchmarks/bench_evaluator.py",
        "started": "2026-12-01T00:00:00+00:00",
        "versions": {"torch": "2", "transformers": "5"},
        "threads": "1",
        "load_start": [1.0, 1.0, 1.0],
        "load_end": [2.0, 1.0, 1.0],
    }
    env = {"cores": 2, "cpu": "x86_64", "params": 100, "dtype": "float32", "matmul_gflops": 1.0}
    env |= {"matmul_gflops_end": 1.0, "dspy_worker": {"dspy": "3", "torch": "2"}}
    dtype = {"provenance": {"note": "an older run"}, "cpu_bf16": False, "n": 4, "bf16_vs_fp32_diff": 0.2}
    dtype |= {"bf16_vs_fp32_flips": 0}
    for name in ("float32", "bfloat16"):
        dtype[name] = {"packed": 1.0, "bs16": 1.0, "diff_packed_bs1": 0.0, "diff_bs16_bs1": 0.0, "flips": 0}
    report = {"provenance": run, "environment": env, "tasks": [task_report], "dtype": dtype}
    path = tmp_path / "evaluator.md"
    bench.write_markdown(report, path)
    text = path.read_text()
    assert "## Generation vs generation" in text and "## Label scoring vs label scoring" in text
    assert "at commit `0123456789`" in text
    assert "Made by a separate run: an older run." in text
    assert "**3/4**" in text  # label agreement
