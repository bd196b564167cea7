"""Where a second thread starts to pay: training steps/s with 1 thread and with all cores, by work per step.

    python benchmarks/bench_threads.py [--seconds 1.0] [--repeats 3]

Nets from the seed net (7 kFLOP per step) to the large one (26 GFLOP per step) run the engine with
1 thread and with torch's default (the machine's cores), taking turns within each repeat (so a busy
machine slows both alike); the table shows the best repeat of each. FLOP per step counts
6 · batch · parameters (forward 2, backward 4). The threshold printed at the end is the smallest
work per step from which all cores are faster than one thread for every larger case;
backprop_cli.runs.distributed.THREADS_THRESHOLD_FLOPS holds the value measured on the README's machine. About
2 minutes there (a line per case as it goes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from mdtable import markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [  # input, hidden, output, batch
    (10, 20, 1, 5),
    (32, 128, 32, 32),
    (64, 256, 64, 32),
    (64, 256, 64, 128),
    (128, 512, 128, 128),
    (256, 1024, 256, 128),
    (256, 1024, 256, 512),
    (512, 2048, 512, 256),
    (1024, 4096, 1024, 512),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per case, thread count and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from backprop_cli.core.build import build_run
    from backprop_cli.config import load_config
    from backprop_cli.core.engine import run_steps
    from backprop_cli.config import flops_per_step
    from backprop_cli.runs.distributed import THREADS_THRESHOLD_FLOPS as THRESHOLD_FLOPS

    cores = torch.get_num_threads()
    settings = sorted({1, cores})
    total = len(CASES) * len(settings) * args.repeats * (args.seconds + 0.6)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch default {cores} thread(s), "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"expected running time: about {total:.0f} s; a line per case as it goes", flush=True)
    if cores == 1:
        print("torch uses 1 thread here: nothing to compare")
        return

    def steps_per_s(cfg, threads: int) -> float:
        torch.set_num_threads(threads)
        run = build_run(cfg)
        steps = run_steps(run.loop(), run.steps, guard=run.guard)
        next(steps), next(steps)  # warm-up
        n, t0 = 0, time.perf_counter()
        for _ in steps:
            n += 1
            if time.perf_counter() - t0 >= args.seconds:
                break
        return n / (time.perf_counter() - t0)

    rows = []
    for i, h, o, b in CASES:
        cfg = load_config(ROOT / "configs" / "seed.yaml", [
            "device=cpu", f"model.input_size={i}", f"model.hidden_size={h}", f"model.output_size={o}",
            f"data.samples={b}", f"data.batch_size={b}", "train.steps=1000000"])
        best = {t: 0.0 for t in settings}
        for _ in range(args.repeats):
            for t in settings:
                best[t] = max(best[t], steps_per_s(cfg, t))
        flops = flops_per_step(cfg)
        speedup = best[cores] / best[1]
        rows.append((flops, f"{i}→{h}→{o}, batch {b}", best[1], best[cores], speedup))
        print(f"  {i}→{h}→{o} batch {b}: {flops:.3g} FLOP/step, 1 thread {best[1]:,.1f} steps/s, "
              f"{cores} threads {best[cores]:,.1f} steps/s ({speedup:.2f}×)", file=sys.stderr, flush=True)
    torch.set_num_threads(cores)

    head = ("net", "FLOP per step", "1 thread steps/s", f"{cores} threads steps/s", f"{cores} threads / 1")
    table = [(name, f"{flops:.3g}", f"{one:,.1f}", f"{all_:,.1f}", f"{s:.2f}×") for flops, name, one, all_, s in rows]
    print(markdown(head, table))
    threshold = None
    for k in range(len(rows)):
        if all(r[4] >= 1.1 for r in rows[k:]):
            threshold = rows[k][0] if k == 0 else (rows[k - 1][0] * rows[k][0]) ** 0.5
            break
    if threshold is None:
        print(f"\nall cores never beat 1 thread by 10% here; backprop uses {THRESHOLD_FLOPS:.3g}")
    else:
        print(f"\nthreshold: all cores are ≥ 1.1× faster from about {threshold:.3g} FLOP per step on "
              f"(geometric middle of the neighbouring cases); backprop uses {THRESHOLD_FLOPS:.3g}")


if __name__ == "__main__":
    main()
