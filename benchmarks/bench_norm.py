"""Whole processes, timed from the outside: `backprop train` on a depth-4 64-wide net with batch norm and
dropout against a plain PyTorch loop with the same layers.

    python benchmarks/bench_norm.py [--steps 20000] [--repeats 5] [--threads 1]
    python benchmarks/bench_norm.py --r2 [--seeds 10] [--tables diabetes,penguins] [--no-tool]

A 16→64→64→64→64→4 ReLU net with `model.norm: batch` and `model.dropout: 0.1` (each hidden block:
Linear without bias → BatchNorm1d → ReLU → Dropout(0.1)), MSE, SGD with momentum 0.9, 4096 teacher samples
in shuffled batches of 64, `--steps` steps. `backprop train -q` (its engine, per-step gradient norms and
records, the diagnostics of its logging steps) runs against the plain loop below (the same layers and
data shapes, a shuffled permutation per epoch, torch's default optimizer implementation, `loss.item()`
every step). Each is a fresh `python` process timed around `subprocess.run`, start-up included; the two
alternate, which goes first swapping every round; wall and CPU time (user + system) are both reported.
Target (issue 25): engine / plain ≥ 0.95 (throughput ratio, best of the repeats). Not a test: run it by hand.

``--r2``: issue 25's done-when on real held-out regression tables. scikit-learn's diabetes data (442 rows,
10 features; scikit-learn needed) and the shipped penguins (body mass from bill length, bill depth and
flipper length, the 342 measured rows), each split 80/20 once (numpy seed 0) into a training and a
validation CSV; six sigmoid hidden layers of 32 (with `model.norm: batch` or none), MSE, SGD lr 0.1
momentum 0.9, batches of 32, 600 steps, features and target standardized with the training rows; the
validation R² (original units, eval mode) for seeds 0 … N−1. Three ways: `backprop train` (a process per
run, `data.validation` the second CSV), the plain PyTorch loop fed the tool's own batch order and the
same (fused) SGD kernel (it must give the tool's numbers: then the tool adds nothing and loses nothing),
and the plain loop with a batch order of its own (torch.randperm, torch's default SGD kernel); each
with and without `data.drop_last` (the last batch of an epoch is 354 − 11·32 = 2 rows on diabetes).
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


R2_CONFIG = """\
seed: {seed}
model: {{input_size: {inputs}, hidden_sizes: [32, 32, 32, 32, 32, 32], output_size: 1, activation: sigmoid,
        norm: {norm}}}
loss: mse
optimizer: {{name: sgd, lr: 0.1, momentum: 0.9}}
data: {{kind: csv, path: train.csv, target: y, validation: val.csv, batch_size: 32, shuffle: true, standardize: true,
        standardize_target: true, drop_last: {drop_last}}}
train: {{steps: 600, eval_every: 100}}
"""


def r2_tables():
    """(name, X, y) of each real table: scikit-learn's diabetes, the shipped penguins' body mass."""
    import csv

    import numpy as np
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    yield "diabetes", d.data, d.target
    with open(ROOT / "configs" / "data" / "penguins.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["body_mass_g"] != "NA"]
    cols = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm")
    yield "penguins", np.array([[float(r[c]) for c in cols] for r in rows]), np.array([float(r["body_mass_g"]) for r in rows])


def r2_split(folder: Path, x, y) -> None:
    """train.csv and val.csv (20%, numpy seed 0) in ``folder``."""
    import numpy as np

    idx = np.random.default_rng(0).permutation(len(y))
    held = round(0.2 * len(y))
    names = [f"f{i}" for i in range(x.shape[1])]
    for part, rows in (("train", idx[held:]), ("val", idx[:held])):
        with open(folder / f"{part}.csv", "w") as f:
            f.write(",".join(names + ["y"]) + "\n")
            f.writelines(",".join(repr(float(v)) for v in x[i]) + f",{float(y[i])!r}\n" for i in rows)


def r2_plain(folder: Path, seed: int, norm: str, drop_last: bool, tool_order: bool) -> float:
    """The plain PyTorch loop: torch.manual_seed(seed), then the layers in the tool's order (its init);
    ``tool_order``: the tool's batches (backprop_cli.data.batches.Batches) and its fused SGD, else
    torch.randperm per epoch and torch's default SGD."""
    import numpy as np
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    from backprop_cli.data.batches import Batches

    def read(name):
        a = np.loadtxt(folder / name, delimiter=",", skiprows=1)
        return torch.tensor(a[:, :-1], dtype=torch.float32), torch.tensor(a[:, -1:], dtype=torch.float32)

    (xt, yt), (xv, yv) = read("train.csv"), read("val.csv")
    mx, sx, my, sy = xt.mean(0), xt.std(0, unbiased=False), yt.mean(0), yt.std(0, unbiased=False)
    xt, xv, ytn = (xt - mx) / sx, (xv - mx) / sx, (yt - my) / sy
    torch.manual_seed(seed)
    widths = [xt.shape[1]] + [32] * 6 + [1]
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        layers.append(nn.Linear(a, b, bias=last or norm == "none"))
        if not last:
            layers += ([nn.BatchNorm1d(b)] if norm == "batch" else []) + [nn.Sigmoid()]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True if tool_order else None)
    batches = Batches(xt, ytn, 32, True, seed, drop_last)
    gen = torch.Generator().manual_seed(1000 + seed)
    n = len(xt)
    per = n // 32 if drop_last else -(-n // 32)
    for step in range(600):
        if tool_order:
            xb, yb = batches(step)
        else:
            if step % per == 0:
                order = torch.randperm(n, generator=gen)
            idx = order[(step % per) * 32:(step % per + 1) * 32]
            xb, yb = xt[idx], ytn[idx]
        loss = nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(xv) * sy + my
    return float(1 - ((pred - yv) ** 2).sum() / ((yv - yv.mean()) ** 2).sum())


def r2_tool(folder: Path, seed: int, norm: str, drop_last: bool, inputs: int, env: dict) -> float:
    import json
    import subprocess

    cfg = folder / "c.yaml"
    cfg.write_text(R2_CONFIG.format(seed=seed, inputs=inputs, norm=norm, drop_last=str(drop_last).lower()))
    r = subprocess.run([sys.executable, "-m", "backprop_cli", "train", "-c", str(cfg), "--format", "json", "-q"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout)["summary"]["validation"]["r2"]


def r2_study(args, env: dict) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    seeds = range(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        for name, x, y in r2_tables():
            if name not in args.tables.split(","):
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            r2_split(folder, x, y)
            for norm in ("none", "batch"):
                for drop_last in ((False, True) if norm == "batch" else (False,)):
                    ways = {"plain, tool's batches": lambda s: r2_plain(folder, s, norm, drop_last, True),
                            "plain, own batches": lambda s: r2_plain(folder, s, norm, drop_last, False)}
                    if args.tool:
                        ways = {"backprop train": lambda s: r2_tool(folder, s, norm, drop_last, x.shape[1], env),
                                **ways}
                    for way, fn in ways.items():
                        v = [fn(s) for s in seeds]
                        print(f"| {name} | {norm} | {'yes' if drop_last else 'no'} | {way} | "
                              + ", ".join(f"{r:.3f}" for r in v)
                              + f" | {np.mean(v):.3f} | {min(v):.3f} | {sum(r >= 0.30 for r in v)}/{len(v)} |",
                              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--r2", action="store_true", help="the R² study on real tables instead of the speed run")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tables", default="diabetes,penguins")
    ap.add_argument("--no-tool", dest="tool", action="store_false", help="--r2: the plain loops only")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if args.r2:
        env = {**env, "OMP_NUM_THREADS": "1"}
        print("| table | model.norm | drop_last | run | validation R² by seed | mean | min | ≥ 0.30 |")
        print("|---|---|---|---|---|---|---|---|")
        return r2_study(args, env)
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
