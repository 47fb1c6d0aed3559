"""Issue 15's three methods from the founding papers, one entry point over their benchmark parts.

- ``gradient`` (``bench_seed_methods_gradient.py``): gradient_text vs the seed prompt vs a soft prompt vs that soft
  prompt projected to its nearest tokens, the gradient_text prompt also scored in generation mode;
- ``unsupervised`` (``bench_seed_methods_unsupervised.py``): label-free prompt learning with 0 labels vs the labeled
  optimizers with 32;
- ``robustness`` (``bench_seed_methods_robustness.py``): the rephrasing spread of the seed prompt vs the robust
  objective vs the robust soft prompt.

Each part is a standalone script with its own options and results file (``results/seed_methods_<part>.{json,md}``,
each cell with its commit, versions and command); this one runs the chosen parts one after the other, single-threaded,
and joins their reports into ``results/seed_methods.md``::

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_methods.py [--parts gradient,robustness] [--report]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = ("gradient", "unsupervised", "robustness")


def run_part(part: str) -> None:
    script = HERE / f"bench_seed_methods_{part}.py"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, str(script)], cwd=HERE, env=env, check=True)


def joined_report() -> str:
    """The parts' markdown reports under one title (a part not run yet is named as missing)."""
    sections = ["# Issue 15's methods: gradient-guided text prompts, label-free learning, rephrasing robustness"]
    for part in PARTS:
        md = RESULTS / f"seed_methods_{part}.md"
        if md.is_file():
            lines = md.read_text(encoding="utf-8").strip().splitlines()
            sections.append("\n".join("#" + ln if ln.startswith("#") else ln for ln in lines))  # one level down
        else:
            sections.append(f"## {part}\n\nNot run yet: `python benchmarks/bench_seed_methods_{part}.py`.")
    return "\n\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--report", action="store_true", help="only join the parts' reports")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if not args.report:
        for part in parts:
            run_part(part)
    (RESULTS / "seed_methods.md").write_text(joined_report(), encoding="utf-8")
    print(RESULTS / "seed_methods.md")


if __name__ == "__main__":
    main()
