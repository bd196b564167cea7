"""Time `backprop tune` as whole processes: start-up paid once per worker, and the gain of 2 workers.

    python benchmarks/bench_tune.py [--trials 20] [--steps 200] [--quick]

Not a test (its numbers depend on the machine, which it names). Two measurements, each a fresh study
in a temporary folder:

1. Overhead: `tune` of the seed-sized net (10 → 20 → 1, ReLU, MSE, SGD; synthetic data with 20%
   held out) for --trials trials (random sampler, no pruning, so every trial trains to the end). Start-up
   is the wall time of the same command with one trial minus that trial's own time; the claim is that
   the N-trial command takes at most start-up + 1.2 × the sum of its trials' own times (Optuna's
   ``duration``: sampling, building the config, reading the data and training). No per-trial process.
2. Workers: the same search with --workers 1 and --workers 2 (a journal file), trials per minute over
   the span the storage recorded (first trial start to last trial end), on a net whose step is
   single-threaded (each worker runs one torch thread). Claim: 2 workers ≥ 1.7 × one worker on a
   2-core machine that nothing else loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
model: {{input_size: 10, hidden_size: 20, output_size: 1}}
loss: mse
optimizer: {{name: sgd, lr: 0.01}}
data: {{kind: synthetic, samples: 200, batch_size: 20, validation: 0.2}}
train: {{steps: {steps}, eval_every: {every}}}
tune:
  sampler: random
  pruner: none
  space:
    optimizer.lr: {{low: 1.0e-3, high: 0.1, log: true}}
    model.hidden_size: {{choices: [10, 20, 40]}}
"""


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load:.2f} at the start")


def tune(folder: Path, *args) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "backprop_cli", "tune", "-c", "b.yaml", "--format", "json", "-q",
                        "--threads", "1", *map(str, args)], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"tune failed:\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout)


def span(folder: Path, storage: str, study: str) -> float:
    import optuna

    s = optuna.load_study(study_name=study, storage=storage)
    starts = [t.datetime_start for t in s.trials]
    ends = [t.datetime_complete for t in s.trials]
    return (max(ends) - min(starts)).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="6 trials of 50 steps")
    a = ap.parse_args()
    if a.quick:
        a.trials, a.steps = 6, 50
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "b.yaml").write_text(CONFIG.format(steps=a.steps, every=max(1, a.steps // 4)))

        wall1, doc1 = tune(folder, "--trials", 1, "--storage", "one.db")
        startup = wall1 - doc1["trials"][0]["duration_s"]
        wall, doc = tune(folder, "--trials", a.trials, "--storage", "many.db")
        own = sum(t["duration_s"] for t in doc["trials"])
        bound = startup + 1.2 * own
        print(textwrap.dedent(f"""
            1. overhead, {a.trials} trials of {a.steps} steps, one worker:
               start-up {startup:.2f} s (1-trial command {wall1:.2f} s), trials' own time {own:.2f} s,
               the command {wall:.2f} s; bound start-up + 1.2 x own = {bound:.2f} s: {'met' if wall <= bound else 'NOT met'}
               (outside the trials: {wall - startup - own:.2f} s, {(wall - startup - own) / a.trials * 1000:.0f} ms a trial)"""))

        rates = {}
        for w in (1, 2):
            journal = f"w{w}.journal"
            cmd_wall, d = tune(folder, "--trials", a.trials, "--workers", w, "--storage", journal, "--study", f"w{w}")
            assert sorted(t["number"] for t in d["trials"]) == list(range(a.trials))
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            s = span(folder, JournalStorage(JournalFileBackend(str(folder / journal))), f"w{w}")
            rates[w] = a.trials / s * 60
            print(f"2. {w} worker(s): {a.trials} trials in {s:.2f} s of the storage's span "
                  f"({rates[w]:.1f} trials/min; the command {cmd_wall:.2f} s)")
        ratio = rates[2] / rates[1]
        print(f"   2 workers / 1 worker: {ratio:.2f}x (claim >= 1.7x on an otherwise idle 2-core machine): "
              f"{'met' if ratio >= 1.7 else 'NOT met'}")


if __name__ == "__main__":
    main()
