"""backprop's validation accuracy against scikit-learn's MLPClassifier, same net, data and hyperparameters.

    pip install -e '.[bench]'          # scikit-learn (the benchmark's own extra, never needed otherwise)
    python benchmarks/bench_sklearn.py # about 3-6 minutes on a 2-core machine

Three real data sets shipped with scikit-learn, none of which the tests use — digits (1,797 rows, 64
features, 10 classes), breast cancer (569 rows, 30 features, 2 classes) and wine (178 rows, 13
features, 3 classes) — are written to CSV files. For each seed, ``backprop train`` runs on the CSV with
``data.validation: 0.2`` and ``data.standardize: true`` (a new process, ``--format json``); scikit-learn's
MLPClassifier then trains on exactly the rows backprop trained on, standardized with the same statistics
(read with backprop's own reader: ``backprop_cli.data.readers.read_table``), with the same hidden size, ReLU,
Adam (lr, betas, eps), batch size, number of epochs, no L2 penalty and no early stopping, and is scored on
the same validation rows. Initialisation and shuffling differ (each library's own), so the comparison is
of the mean over seeds. Goal (issue 13): backprop within 2 points of scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {  # name: (loader, hidden, lr, batch, epochs)
    "digits": ("load_digits", 32, 1e-3, 32, 40),
    "breast_cancer": ("load_breast_cancer", 32, 1e-3, 32, 60),
    "wine": ("load_wine", 32, 1e-3, 16, 100),
}


def write_case(name: str, folder: Path) -> tuple[Path, int, int]:
    import sklearn.datasets as ds

    bunch = getattr(ds, CASES[name][0])()
    x, y = bunch.data, bunch.target
    names = [f"x{i}" for i in range(x.shape[1])]
    path = folder / f"{name}.csv"
    with open(path, "w") as f:
        f.write(",".join(names + ["label"]) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(f"{v:.10g}" for v in row) + f",{bunch.target_names[label]}\n")
    return path, x.shape[1], len(bunch.target_names)


def config(name: str, csv: Path, features: int, classes: int, seed: int, folder: Path) -> Path:
    _, hidden, lr, batch, epochs = CASES[name]
    path = folder / f"{name}-{seed}.yaml"
    path.write_text(f"""seed: {seed}
model: {{input_size: {features}, hidden_size: {hidden}, output_size: {classes}, activation: relu}}
loss: cross_entropy
optimizer: {{name: adam, lr: {lr}}}
data: {{kind: csv, path: {csv}, target: label, validation: 0.2, standardize: true, batch_size: {batch}}}
train: {{epochs: {epochs}}}
""")
    return path


def run_backprop(cfg: Path) -> tuple[float, float]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "backprop_cli", "train", "-c", str(cfg), "--format", "json", "-q",
                        "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout)["summary"]["validation"]["accuracy"], time.perf_counter() - t


def run_sklearn(name: str, cfg_path: Path, seed: int) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from backprop_cli.config import load_config
    from backprop_cli.data.load import read_table

    table = read_table(load_config(cfg_path))  # the same rows, standardized with the same statistics
    _, hidden, lr, batch, epochs = CASES[name]
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", solver="adam", learning_rate_init=lr,
                        beta_1=0.9, beta_2=0.999, epsilon=1e-8, batch_size=batch, max_iter=epochs, alpha=0.0,
                        shuffle=True, random_state=seed, tol=0.0, n_iter_no_change=epochs + 1,
                        early_stopping=False)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(table.x, table.y)
    return float(clf.score(table.val_x, table.val_y)), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    print(f"bench_sklearn: {', '.join(args.cases)} × {args.seeds} seeds; expected running time about "
          f"{0.2 * args.seeds * len(args.cases):.0f}-{0.5 * args.seeds * len(args.cases):.0f} minutes", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sklearn-") as tmp:
        folder = Path(tmp)
        for name in args.cases:
            csv, features, classes = write_case(name, folder)
            ours, theirs = [], []
            for seed in range(args.seeds):
                cfg = config(name, csv, features, classes, seed, folder)
                a, ta = run_backprop(cfg)
                b, tb = run_sklearn(name, cfg, seed)
                ours.append(a)
                theirs.append(b)
                print(f"  {name} seed {seed}: backprop {100 * a:.1f}% ({ta:.1f} s, whole process), "
                      f"scikit-learn {100 * b:.1f}% ({tb:.1f} s, fit)", flush=True)
            rows.append((name, CASES[name], ours, theirs))
    print()
    print("| data set | net, batch, epochs | backprop val. accuracy | scikit-learn val. accuracy | difference |")
    print("|---|---|---|---|---|")
    for name, (_, hidden, lr, batch, epochs), ours, theirs in rows:
        def ms(v):
            return f"{100 * statistics.mean(v):.1f}% ± {100 * statistics.pstdev(v):.1f}"
        diff = 100 * (statistics.mean(ours) - statistics.mean(theirs))
        print(f"| {name} | {hidden} hidden, Adam lr {lr:g}, batch {batch}, {epochs} epochs | {ms(ours)} | "
              f"{ms(theirs)} | {diff:+.1f} points |")


if __name__ == "__main__":
    main()
