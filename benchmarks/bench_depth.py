"""Whole processes, timed from the outside: `backprop train` on a deep net against a plain PyTorch loop of
the same depth, and `backprop find-lr` against the tool's start-up time.

    python benchmarks/bench_depth.py [--steps 20000] [--repeats 5] [--threads 1]

1. Depth: a 16→64→64→64→64→4 ReLU net (4 hidden layers of 64, `model.hidden_sizes`), MSE, SGD with
   momentum 0.9, 4096 teacher samples in shuffled batches of 64, `--steps` steps. `backprop train -q`
   (its engine, its per-step gradient norms and records, and the per-layer diagnostics of its logging
   steps) runs against a plain loop written below (the same shapes of model and data, a shuffled
   permutation per epoch, the same loss and optimizer hyperparameters with torch's default optimizer
   implementation, `loss.item()` every step). Each is a fresh
   `python` process timed with `time.perf_counter` around `subprocess.run`, start-up included; the two
   alternate, which goes first swapping every round. Target: engine / plain ≥ 0.95 (throughput ratio,
   best of the repeats).
2. find-lr: `backprop find-lr -c configs/seed.yaml` (100 steps) against `backprop train -c
   configs/seed.yaml -q` (one step: the start-up time). Target: find-lr ≤ start-up + 1 s (medians).

Both get `OMP_NUM_THREADS=--threads` (default 1: on a small shared machine more threads than free
cores make torch wait on itself). Each process is also timed by the CPU time it used (user + system,
from `resource.getrusage(RUSAGE_CHILDREN)`), which other processes on a busy machine disturb far less
than the wall clock.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
seed: 0
device: cpu
model: {{input_size: 16, hidden_sizes: [64, 64, 64, 64], output_size: 4, activation: relu}}
loss: mse
optimizer: {{name: sgd, lr: 0.01, momentum: 0.9}}
data: {{kind: synthetic, samples: 4096, targets: teacher, batch_size: 64, shuffle: true}}
train: {{steps: {steps}}}
"""

PLAIN = """\
import sys
import torch
from torch import nn

steps = int(sys.argv[1])
torch.manual_seed(0)
widths = [16, 64, 64, 64, 64, 4]
layers = []
for i, (a, b) in enumerate(zip(widths, widths[1:])):
    layers.append(nn.Linear(a, b))
    if i < len(widths) - 2:
        layers.append(nn.ReLU())
model = nn.Sequential(*layers)
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 16, generator=g)
teacher = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
with torch.no_grad():
    y = teacher(x) + 0.1 * torch.randn(4096, 4, generator=g)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.MSELoss()
per_epoch = 4096 // 64
losses = []
for step in range(steps):
    if step % per_epoch == 0:
        order = torch.randperm(4096, generator=g)
    idx = order[(step % per_epoch) * 64:(step % per_epoch + 1) * 64]
    xb, yb = x[idx], y[idx]
    loss = loss_fn(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(f"done: {steps} steps, last loss {losses[-1]:.4g}")
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    backprop = [sys.executable, "-m", "backprop_cli"]

    import torch

    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
          f"{platform.python_version()}, OMP_NUM_THREADS={args.threads}")
    estimate = args.repeats * 2 * (3 + args.steps / 2000) + args.repeats * 2 * 4
    print(f"expected running time: about {estimate:.0f} s on the README's machine (a line per round as it goes)",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "depth4.yaml"
        cfg.write_text(CONFIG.format(steps=args.steps))
        plain = Path(tmp) / "plain.py"
        plain.write_text(PLAIN)
        runs = {"engine": [backprop + ["train", "-c", str(cfg), "-q"]],
                "plain": [[sys.executable, str(plain), str(args.steps)]]}
        wall: dict[str, list[float]] = {"engine": [], "plain": []}
        cpu: dict[str, list[float]] = {"engine": [], "plain": []}
        print(f"\n1. depth 4 × 64, {args.steps} steps, whole processes, {args.repeats} rounds")
        for r in range(args.repeats):
            order = ["engine", "plain"] if r % 2 == 0 else ["plain", "engine"]
            for name in order:
                w, c = timed(runs[name][0], env)
                wall[name].append(w)
                cpu[name].append(c)
            print(f"   round {r + 1}: engine {wall['engine'][-1]:.2f} s (CPU {cpu['engine'][-1]:.2f} s), plain "
                  f"{wall['plain'][-1]:.2f} s (CPU {cpu['plain'][-1]:.2f} s), wall ratio "
                  f"{wall['plain'][-1] / wall['engine'][-1]:.3f}", flush=True)
        for what, times in (("wall", wall), ("CPU", cpu)):
            best = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"   {what:4} best:   engine {best['engine']:.2f} s ({args.steps / best['engine']:,.0f} steps/s), "
                  f"plain {best['plain']:.2f} s ({args.steps / best['plain']:,.0f} steps/s): engine / plain = "
                  f"{best['plain'] / best['engine']:.3f} (target ≥ 0.95)")
            print(f"   {what:4} median: engine {med['engine']:.2f} s, plain {med['plain']:.2f} s: engine / plain = "
                  f"{med['plain'] / med['engine']:.3f}")

        print(f"\n2. find-lr on the seed net (100 steps) vs start-up, {args.repeats} rounds")
        seed = str(ROOT / "configs" / "seed.yaml")
        start, find = [], []
        for r in range(args.repeats):
            start.append(timed(backprop + ["train", "-c", seed, "-q"], env))
            find.append(timed(backprop + ["find-lr", "-c", seed], env))
            print(f"   round {r + 1}: start-up (train, 1 step) {start[-1][0]:.2f} s (CPU {start[-1][1]:.2f} s), "
                  f"find-lr {find[-1][0]:.2f} s (CPU {find[-1][1]:.2f} s)", flush=True)
        for what, k in (("wall", 0), ("CPU", 1)):
            s, f = statistics.median(t[k] for t in start), statistics.median(t[k] for t in find)
            print(f"   {what:4} median: start-up {s:.2f} s, find-lr {f:.2f} s: find-lr − start-up = {f - s:.2f} s "
                  "(target ≤ 1 s)")
    print(textwrap.dedent("""
        Throughput ratios > 1 mean the engine is faster (its fused SGD kernel against torch's default).
    """).rstrip())


if __name__ == "__main__":
    main()
