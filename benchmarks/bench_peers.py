"""backprop against its peers on a real data set: a plain PyTorch script, PyTorch Lightning, scikit-learn.

    pip install "torch==2.13.0" -e ".[peers]"     # lightning and scikit-learn: this benchmark's own extra
    python benchmarks/bench_peers.py [--epochs 100] [--repeats 3]

The data is the Palmer penguins table shipped in configs/data/penguins.csv (CC0; see
configs/data/README.md): species (3 classes) from bill length, bill depth, flipper length and body
mass, the 2 rows without measurements left out. It is split once, seeded, into 80% training and 20%
validation rows, standardized with the training rows' mean and std, and written to two CSV files that
every peer reads. Each peer trains the same net (4 → 16 → 3, ReLU), the same loss (cross-entropy),
the same optimizer (Adam, lr 0.01, betas 0.9/0.999, eps 1e-8, no weight decay), the same batch size
(32, reshuffled every epoch) for the same number of epochs, as a whole new process:

- ``backprop train`` on a config written here (``data.validation`` names the validation CSV; one
  evaluation at the end, ``train.eval_every`` = the run's steps, as the peers evaluate once);
- a plain PyTorch script (the ``--peer plain`` mode of this file: a hand-written loop);
- PyTorch Lightning's ``Trainer`` (``--peer lightning``: a LightningModule and a DataLoader);
- scikit-learn's ``MLPClassifier`` (``--peer sklearn``: alpha 0, no early stopping).

Each reports its final training loss (the row-weighted mean of the last epoch's batch losses, what
scikit-learn's ``loss_curve_`` holds) and its validation accuracy. The peers take turns (the order
rotates every repeat); the table shows each one's median wall time. The torch peers run with the
thread count `backprop train` picks for this net (1), scikit-learn with OMP/OpenBLAS threads 1 too.
Initialisation and shuffling are each library's own, so losses and accuracies agree only roughly.
About 1-2 minutes on the README's machine (a line per run as it goes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mdtable import markdown

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "configs" / "data" / "penguins.csv"
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
TARGET = "species"
HIDDEN, LR, BATCH = 16, 0.01, 32


def prepare(folder: Path, seed: int = 0) -> tuple[Path, Path, int]:
    """train.csv and val.csv in ``folder``: standardized features and the class index; returns the classes."""
    with open(PENGUINS, newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(r[c] not in ("", "NA") for c in FEATURES + [TARGET])]
    classes = sorted({r[TARGET] for r in rows})
    data = [([float(r[c]) for c in FEATURES], classes.index(r[TARGET])) for r in rows]
    random.Random(seed).shuffle(data)
    cut = round(0.8 * len(data))
    train, val = data[:cut], data[cut:]
    mean = [statistics.fmean(x[j] for x, _ in train) for j in range(len(FEATURES))]
    std = [statistics.pstdev([x[j] for x, _ in train]) for j in range(len(FEATURES))]
    paths = []
    for name, part in (("train.csv", train), ("val.csv", val)):
        path = folder / name
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FEATURES + [TARGET])
            for x, y in part:
                w.writerow([repr((v - m) / s) for v, m, s in zip(x, mean, std)] + [y])
        paths.append(path)
    return paths[0], paths[1], len(classes)


def load(path: Path):
    import numpy as np

    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


# --------------------------------------------------------------------------- the peers (child processes)


def plain(args) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    (xt, yt), (xv, yv) = load(args.train), load(args.val)
    x, y, xv, yv = map(torch.from_numpy, (xt, yt, xv, yv))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, args.classes))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(x), generator=g), 0.0
        for lo in range(0, len(x), BATCH):
            idx = order[lo:lo + BATCH]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
    with torch.no_grad():
        accuracy = (model(xv).argmax(1) == yv).float().mean().item()
    return {"train_loss": total / len(x), "val_accuracy": accuracy}


def lightning(args) -> dict:
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    (xt, yt), (xv, yv) = load(args.train), load(args.val)
    x, y, xv, yv = map(torch.from_numpy, (xt, yt, xv, yv))

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(x.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, args.classes))
            self.loss_fn = nn.CrossEntropyLoss()
            self.total = self.rows = 0

        def training_step(self, batch, _):
            xb, yb = batch
            loss = self.loss_fn(self.net(xb), yb)
            self.total += loss.item() * len(xb)
            self.rows += len(xb)
            return loss

        def on_train_epoch_start(self):
            self.total = self.rows = 0

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    L.seed_everything(0, verbose=False)
    model = Net()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True))
    with torch.no_grad():
        accuracy = (model.net(xv).argmax(1) == yv).float().mean().item()
    return {"train_loss": model.total / model.rows, "val_accuracy": accuracy}


def sklearn(args) -> dict:
    import warnings

    from sklearn.neural_network import MLPClassifier

    (xt, yt), (xv, yv) = load(args.train), load(args.val)
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", alpha=0.0, batch_size=BATCH,
                        learning_rate_init=LR, beta_1=0.9, beta_2=0.999, epsilon=1e-8, max_iter=args.epochs,
                        shuffle=True, random_state=0, tol=0.0, n_iter_no_change=args.epochs + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as asked
        clf.fit(xt, yt)
    return {"train_loss": float(clf.loss_curve_[-1]), "val_accuracy": float(clf.score(xv, yv))}


PEERS = {"plain": plain, "lightning": lightning, "sklearn": sklearn}


# --------------------------------------------------------------------------- the benchmark


def backprop_config(folder: Path, epochs: int, classes: int) -> Path:
    """The same run as the peers: one evaluation (training and validation rows) at the end, as they do."""
    rows = sum(1 for _ in open(folder / "train.csv")) - 1
    steps = epochs * -(-rows // BATCH)
    path = folder / "penguins_bench.yaml"
    path.write_text(f"""seed: 0
device: cpu
model: {{input_size: {len(FEATURES)}, hidden_size: {HIDDEN}, output_size: {classes}, activation: relu}}
loss: cross_entropy
optimizer: {{name: adam, lr: {LR}}}
data: {{kind: csv, path: train.csv, target: {TARGET}, validation: val.csv, batch_size: {BATCH}, shuffle: true}}
train: {{epochs: {epochs}, eval_every: {steps}}}
""")
    return path


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return wall, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--val", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--classes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        print(json.dumps(PEERS[args.peer](args)))
        return

    missing = [m for m in ("lightning", "sklearn") if __import__("importlib").util.find_spec(m) is None]
    if missing:
        sys.exit(f"needs {' and '.join(missing)}: pip install \"torch==2.13.0\" -e \".[peers]\"")
    import lightning as L
    import sklearn
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, lightning "
          f"{L.__version__}, scikit-learn {sklearn.__version__}, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"expected running time: about {args.repeats * 4 * (4 + args.epochs * 0.02):.0f} s here "
          "(a line per run as it goes)", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    exe = Path(sys.executable).with_name("backprop")
    bp = [str(exe)] if exe.exists() else [sys.executable, "-m", "backprop_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, val, classes = prepare(folder)
        cfg = backprop_config(folder, args.epochs, classes)
        child = [sys.executable, str(Path(__file__).resolve()), "--train", str(train), "--val", str(val),
                 "--classes", str(classes), "--epochs", str(args.epochs)]
        cmds = {"backprop train": [*bp, "train", "-c", str(cfg), "--format", "json", "-q"],
                "plain PyTorch script": [*child, "--peer", "plain"],
                "PyTorch Lightning Trainer": [*child, "--peer", "lightning"],
                "scikit-learn MLPClassifier": [*child, "--peer", "sklearn"]}
        results = {name: [] for name in cmds}
        for k in range(args.repeats):
            names = list(cmds)
            for name in names[k % len(names):] + names[:k % len(names)]:
                wall, out = run(cmds[name], folder, {**env, "OMP_NUM_THREADS": "1"} if "scikit" in name else env)
                doc = json.loads(out if name == "backprop train" else  # an indented document
                                 [line for line in out.splitlines() if line.startswith("{")][-1])
                if name == "backprop train":
                    doc = {"train_loss": doc["summary"]["epoch_loss"] if "summary" in doc else doc["epoch_loss"],
                           "val_accuracy": (doc.get("summary", doc))["validation"]["accuracy"]}
                results[name].append((wall, doc))
                print(f"  {name} #{k + 1}: {wall:.2f} s, train loss {doc['train_loss']:.4f}, "
                      f"validation accuracy {doc['val_accuracy']:.3f}", file=sys.stderr, flush=True)
    plain_time = statistics.median(w for w, _ in results["plain PyTorch script"])
    head = ("peer", "wall time (median)", "vs plain script", "final train loss", "validation accuracy")
    rows = []
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        last = runs[-1][1]
        rows.append((name, f"{wall:.2f} s", f"{wall / plain_time:.2f}×", f"{last['train_loss']:.4f}",
                     f"{last['val_accuracy']:.3f}"))
    print(f"\npenguins, {args.epochs} epochs, batch {BATCH}, 4 → {HIDDEN} → {classes}, Adam lr {LR}; "
          f"median of {args.repeats} runs each; load average {os.getloadavg()[0]:.2f} at the end")
    print(markdown(head, rows))


if __name__ == "__main__":
    main()
