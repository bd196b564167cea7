"""Whole processes, timed from the outside: `backprop train` on a depth-4 64-wide net with batch norm and
dropout against a plain PyTorch loop with the same layers.

    python benchmarks/bench_norm.py [--steps 20000] [--repeats 5] [--threads 1]

A 16→64→64→64→64→4 ReLU net with `model.norm: batch` and `model.dropout: 0.1` (each hidden block:
Linear without bias → BatchNorm1d → ReLU → Dropout(0.1)), MSE, SGD with momentum 0.9, 4096 teacher samples
in shuffled batches of 64, `--steps` steps. `backprop train -q` (its engine, per-step gradient norms and
records, the diagnostics of its logging steps) runs against the plain loop below (the same layers and
data shapes, a shuffled permutation per epoch, torch's default optimizer implementation, `loss.item()`
every step). Each is a fresh `python` process timed around `subprocess.run`, start-up included; the two
alternate, which goes first swapping every round; wall and CPU time (user + system) are both reported.
Target (issue 25): engine / plain ≥ 0.95 (throughput ratio, best of the repeats). Not a test: run it by hand.
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
from bench_depth import ROOT, timed  # noqa: E402 - the same process timer as the plain-depth benchmark

CONFIG = """\
seed: 0
device: cpu
model: {{input_size: 16, hidden_sizes: [64, 64, 64, 64], output_size: 4, activation: relu, norm: batch,
        dropout: 0.1}}
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
    last = i == len(widths) - 2
    layers.append(nn.Linear(a, b, bias=last))
    if not last:
        layers += [nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(0.1)]
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
model.train()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    import torch

    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
          f"{platform.python_version()}, OMP_NUM_THREADS={args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "norm.yaml"
        cfg.write_text(CONFIG.format(steps=args.steps))
        plain = Path(tmp) / "plain.py"
        plain.write_text(PLAIN)
        runs = {"engine": [sys.executable, "-m", "backprop_cli", "train", "-c", str(cfg), "-q"],
                "plain": [sys.executable, str(plain), str(args.steps)]}
        wall: dict[str, list[float]] = {"engine": [], "plain": []}
        cpu: dict[str, list[float]] = {"engine": [], "plain": []}
        print(f"depth 4 × 64, batch norm + dropout 0.1, {args.steps} steps, whole processes, {args.repeats} rounds")
        for r in range(args.repeats):
            for name in (["engine", "plain"] if r % 2 == 0 else ["plain", "engine"]):
                w, c = timed(runs[name], env)
                wall[name].append(w)
                cpu[name].append(c)
            print(f"   round {r + 1}: engine {wall['engine'][-1]:.2f} s (CPU {cpu['engine'][-1]:.2f} s), plain "
                  f"{wall['plain'][-1]:.2f} s (CPU {cpu['plain'][-1]:.2f} s)", flush=True)
        for what, times in (("wall", wall), ("CPU", cpu)):
            best = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"   {what:4} best:   engine {best['engine']:.2f} s, plain {best['plain']:.2f} s: engine / plain = "
                  f"{best['plain'] / best['engine']:.3f} (target ≥ 0.95)")
            print(f"   {what:4} median: engine {med['engine']:.2f} s, plain {med['plain']:.2f} s: engine / plain = "
                  f"{med['plain'] / med['engine']:.3f}")


if __name__ == "__main__":
    main()
