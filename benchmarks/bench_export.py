"""How fast an exported model predicts: onnxruntime on the raw columns, and backprop_cli.load(...).predict,
beside `backprop predict`'s whole process.

    python benchmarks/bench_export.py               # about half a minute
    python benchmarks/bench_export.py --repeats 9

The penguins table (text categories, empty cells) trains for 200 steps; its checkpoint is exported to ONNX.
Timed, each the median of --repeats runs (the minimum beside it), after one warm-up call:

- onnxruntime, one row, from a loaded session (``InferenceSession.run`` on seven [1, 1] inputs);
- onnxruntime, 100,000 rows (the new birds repeated) from a loaded session;
- ``bp.load(...).predict(one_row)`` after the load (a dict of one-cell columns: through a temporary Parquet
  file and predict's reader, as the CLI reads its file);
- ``backprop predict --checkpoint CKPT --data penguins_new.csv`` as a new process (import, load, read, write).

Targets (issue 28): onnxruntime one row ≤ 1 ms and 100,000 rows ≤ 0.5 s; bp.load predict one row ≤ 5 ms.
Wall times depend on what else the machine runs: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "configs" / "data"


def timed(call, repeats: int) -> tuple[float, float, float]:
    """Median and min wall time of ``call`` after one warm-up, and the median of the calling thread's CPU
    time (``time.thread_time``: what the call itself computed, which a busy machine's queue does not add to;
    for the whole process it is the child's user + system time)."""
    call()
    times, cpu = [], []
    for _ in range(repeats):
        t, c, kids = time.perf_counter(), time.thread_time(), os.times()
        call()
        times.append(time.perf_counter() - t)
        after = os.times()
        child = (after.children_user - kids.children_user) + (after.children_system - kids.children_system)
        cpu.append(child if child > 0 else time.thread_time() - c)
    return statistics.median(times), min(times), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import onnxruntime as ort

    import backprop_cli as bp

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        cli = [sys.executable, "-m", "backprop_cli"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for step in (["init", work / "p.yaml", "--csv", DATA / "penguins.csv", "--target", "species"],
                     ["train", "-c", work / "p.yaml", "--steps", "200", "--save", work / "p.pt", "-q"],
                     ["export", "--checkpoint", work / "p.pt", "--out", work / "p.onnx"]):
            subprocess.run([*cli, *map(str, step)], check=True, env=env, capture_output=True)
        session = ort.InferenceSession(str(work / "p.onnx"), providers=["CPUExecutionProvider"])
        row = {"island": "Biscoe", "bill_length_mm": 46.2, "bill_depth_mm": 14.5, "flipper_length_mm": 209.0,
               "body_mass_g": 4800.0, "sex": "", "year": 2007.0}
        one = {k: np.array([[v]], np.float32 if isinstance(v, float) else object) for k, v in row.items()}
        many = {k: np.repeat(v, 100_000, axis=0) for k, v in one.items()}
        m = bp.load(work / "p.pt")
        cells = {k: [v] for k, v in row.items()}
        results = [
            ("onnxruntime, 1 row (loaded session)", *timed(lambda: session.run(None, one), args.repeats * 200), 1e-3),
            ("onnxruntime, 100,000 rows (loaded session)", *timed(lambda: session.run(None, many), args.repeats), 0.5),
            ("bp.load(...).predict(1 row), after the load", *timed(lambda: m.predict(cells), args.repeats * 10),
             5e-3),
            ("backprop predict, whole process (6 rows)",
             *timed(lambda: subprocess.run([*cli, "predict", "--checkpoint", str(work / "p.pt"), "--data",
                                            str(DATA / "penguins_new.csv")], check=True, env=env,
                                           capture_output=True), args.repeats), None),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| what | median | min | CPU (median) | target |")
    print("|---|---|---|---|---|")
    for what, med, low, cpu, target in results:
        goal = "" if target is None else f"≤ {target * 1000:g} ms" + (" ✓" if med <= target else " ✗")
        print(f"| {what} | {med * 1000:.3g} ms | {low * 1000:.3g} ms | {cpu * 1000:.3g} ms | {goal} |")


if __name__ == "__main__":
    main()
