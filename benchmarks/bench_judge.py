"""Issue 26's done-when checks on real tables that no test reads (needs scikit-learn, for its bundled
datasets and as the reference; never a runtime dependency of backprop):

1. `train --folds 5` against scikit-learn's cross_val_score (StratifiedKFold(5, shuffle=True)) with the
   same MLP (one hidden layer of 32 ReLU units, Adam lr 0.01, batch 32, 30 epochs, standardized features);
2. `loss.class_weights: auto` on an imbalanced table (scikit-learn's breast-cancer table, the malignant
   class subsampled to a few percent): the minority recall with and without weights, macro F1, ROC AUC;
3. find-lr's suggestion on scikit-learn's diabetes table (10 standardized features, two hidden layers
   of 32, SGD momentum 0.9): 300 steps at the suggestion, mean loss of the last 10 over the first 10;
4. restore_best --save: evaluate on the checkpoint against the best val_loss the run printed.

Run: python3 benchmarks/bench_judge.py [--out DIR]   (prints one line per check; about a minute)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def backprop(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "backprop_cli", *map(str, args), "--format", "json"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"backprop {' '.join(map(str, args))} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    with open(path, "w") as f:
        f.write(",".join([*names, "target"]) + "\n")
        for row, t in zip(x, y):
            f.write(",".join(f"{v:.6g}" for v in row) + f",{t}\n")


def config(path: Path, csv: Path, features: int, outputs: int, loss: str, extra_data: str = "", train: str = "",
           optimizer: str = "{name: adam, lr: 0.01}", hidden: str = "hidden_size: 32", seed: int = 0) -> Path:
    path.write_text(f"""seed: {seed}
device: cpu
model: {{input_size: {features}, {hidden}, output_size: {outputs}}}
loss: {loss}
optimizer: {optimizer}
data: {{kind: csv, path: {csv}, target: target, standardize: true, batch_size: 32{extra_data}}}
train: {{{train or 'epochs: 30'}}}
""")
    return path


def check_folds(tmp: Path, name: str, x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    csv = tmp / f"{name}.csv"
    write_csv(csv, x, y, [f"f{i}" for i in range(x.shape[1])])
    k = len(np.unique(y))
    cfg = config(tmp / f"{name}.yaml", csv, x.shape[1], k, "cross_entropy")
    ours = backprop("train", "-c", cfg, "--folds", 5)["cross_validation"]
    scores = []
    for seed in range(3):
        mlp = MLPClassifier(hidden_layer_sizes=(32,), solver="adam", learning_rate_init=0.01, batch_size=32,
                            max_iter=30, alpha=0.0, random_state=seed)
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        scores.append(cross_val_score(make_pipeline(StandardScaler(), mlp), x, y, cv=cv).mean())
    return {"table": name, "rows": len(y), "backprop_mean_accuracy": ours["mean"]["accuracy"],
            "backprop_std": ours["std"]["accuracy"], "sklearn_mean_accuracy": float(np.mean(scores)),
            "difference_points": 100 * (ours["mean"]["accuracy"] - float(np.mean(scores)))}


def check_class_weights(tmp: Path) -> dict:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x, y = d.data, d.target  # 0 malignant (212), 1 benign (357)
    rng = np.random.default_rng(0)
    minority = np.flatnonzero(y == 0)
    keep = np.concatenate([np.flatnonzero(y == 1), rng.choice(minority, 14, replace=False)])
    keep.sort()
    x, y = x[keep], 1 - y[keep]  # class 1: malignant, the rare one
    csv = tmp / "imbalanced.csv"
    write_csv(csv, x[:, :4], y, [f"f{i}" for i in range(4)])  # 4 features: a harder table
    out = {"rows": len(y), "minority_share": float(y.mean())}
    for label, loss in (("unweighted", "cross_entropy"), ("auto", "{name: cross_entropy, class_weights: auto}")):
        cfg = config(tmp / f"cw_{label}.yaml", csv, 4, 2, loss, ", validation: 0.4", "epochs: 20",
                     optimizer="{name: adam, lr: 0.003}", hidden="hidden_size: 8")
        v = backprop("train", "-c", cfg)["summary"]["validation"]
        recall = next(row["recall"] for row in v["per_class"] if row["class"] == "1")
        out[label] = {"minority_recall": recall, "f1_macro": v["f1_macro"], "roc_auc": v["roc_auc"],
                      "accuracy": v["accuracy"]}
    return out


def check_find_lr(tmp: Path) -> dict:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    csv = tmp / "diabetes.csv"
    write_csv(csv, d.data, d.target, [f"f{i}" for i in range(10)])
    cfg = config(tmp / "diabetes.yaml", csv, 10, 1, "mse", ", validation: 0.2, standardize_target: true",
                 "steps: 300", optimizer="{name: sgd, lr: 0.01, momentum: 0.9}", hidden="hidden_sizes: [32, 32]")
    found = backprop("find-lr", "-c", cfg)
    lr = found["suggested_lr"]
    metrics = tmp / "diabetes.jsonl"
    backprop("train", "-c", cfg, "--set", f"optimizer.lr={lr!r}", "--metrics", metrics)
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
    return {"suggested_lr": lr, "steepest_lr": found["steepest_lr"], "lr_min": found["lr_min"],
            "first10": float(np.mean(losses[:10])), "last10": float(np.mean(losses[-10:])),
            "ratio": float(np.mean(losses[-10:]) / np.mean(losses[:10]))}


def check_restore_best(tmp: Path) -> dict:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    csv = tmp / "cancer.csv"
    write_csv(csv, d.data, d.target, [f"f{i}" for i in range(30)])
    cfg = config(tmp / "rb.yaml", csv, 30, 2, "cross_entropy", ", validation: 0.3",
                 "epochs: 40, early_stopping: {patience: 100, restore_best: true}",
                 optimizer="{name: adam, lr: 0.05}", hidden="hidden_size: 64")
    metrics, save = tmp / "rb.jsonl", tmp / "rb.pt"
    doc = backprop("train", "-c", cfg, "--save", save, "--metrics", metrics)
    evals = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = [r for r in evals if "val_loss" in r]
    best = min(evals, key=lambda r: r["val_loss"])
    ev = backprop("evaluate", "--checkpoint", save)
    return {"best_step": best["step"], "best_val_loss": best["val_loss"], "last_val_loss": evals[-1]["val_loss"],
            "summary_restored": doc["summary"]["validation"].get("restored_best"), "evaluate_step": ev["step"],
            "evaluate_loss": ev["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from sklearn.datasets import load_breast_cancer, load_wine

    with tempfile.TemporaryDirectory() as td:
        tmp = args.out or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        results = {}
        for name, loader in (("breast_cancer", load_breast_cancer), ("wine", load_wine)):
            d = loader()
            results[f"folds_{name}"] = check_folds(tmp, name, d.data, d.target)
            print(json.dumps(results[f"folds_{name}"]), flush=True)
        for name, fn in (("class_weights", check_class_weights), ("find_lr", check_find_lr),
                         ("restore_best", check_restore_best)):
            results[name] = fn(tmp)
            print(json.dumps({name: results[name]}), flush=True)


if __name__ == "__main__":
    main()
