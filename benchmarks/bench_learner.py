"""Whole processes, timed from the outside: the learner's commands (issue 27) against start-up.

    python benchmarks/bench_learner.py [--repeats 5]

On the seed net (configs/seed.yaml): `explain --config`, `graph --config` (DOT text on stdout, and a PNG
through `dot` or matplotlib), `graph --example` and `exercise check` of a correct `linear` backward, each
against two start-up references: `python -c "import torch, typer"` and a 1-step `train` of the seed
config (what every command that trains pays before its first step). Each is a fresh `python` process
timed around `subprocess.run`; the commands take turns within each round, the order rotating by one
every round; wall and CPU time (user + system, of the process and its children: `exercise check` runs the
learner's file in a child) are both reported, with the median over rounds. Target (issue 27): each
command within start-up (the 1-step train) + 1 s. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_depth import ROOT, timed  # noqa: E402 - the same process timer as the other benchmarks

LINEAR = "import torch\n\n\ndef backward(x, w, b, dout):\n    return dout @ w, dout.T @ x, dout.sum(0)\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    import torch

    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start")
    bp = [sys.executable, "-m", "backprop_cli"]
    seed = str(ROOT / "configs" / "seed.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        solution = Path(tmp) / "linear.py"
        solution.write_text(LINEAR)
        cases = {
            "import torch, typer": [sys.executable, "-c", "import torch, typer"],
            "train (1 step)": bp + ["train", "-c", seed, "-q"],
            "explain --config": bp + ["explain", "-c", seed],
            "graph --config (DOT)": bp + ["graph", "-c", seed],
            "graph --config --out png": bp + ["graph", "-c", seed, "--out", str(Path(tmp) / "g.png")],
            "graph --example": bp + ["graph", "--example"],
            "exercise check linear": bp + ["exercise", "check", str(solution)],
        }
        names = list(cases)
        wall = {n: [] for n in names}
        cpu = {n: [] for n in names}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                w, c = timed(cases[name], env)
                wall[name].append(w)
                cpu[name].append(c)
            print(f"   round {r + 1} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    ref = statistics.median(wall["train (1 step)"])
    ref_cpu = statistics.median(cpu["train (1 step)"])
    print(f"\n| command | wall median | wall min | CPU median | CPU min | CPU over 1-step train |")
    print("|---|---|---|---|---|---|")
    for n in names:
        print(f"| `{n}` | {statistics.median(wall[n]):.2f} s | {min(wall[n]):.2f} s | "
              f"{statistics.median(cpu[n]):.2f} s | {min(cpu[n]):.2f} s | "
              f"{statistics.median(cpu[n]) - ref_cpu:+.2f} s |")
    print(f"\nstart-up reference (1-step train): wall median {ref:.2f} s, CPU median {ref_cpu:.2f} s; "
          "target: each command within it + 1 s")


if __name__ == "__main__":
    main()
