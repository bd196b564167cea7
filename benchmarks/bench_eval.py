"""One evaluation (every validation row, eval mode, inference_mode, batches of 65,536 rows) against
100 training steps of batch 32, on the same 20→64→64→3 net (cross_entropy).

    python benchmarks/bench_eval.py            # about 20 seconds

Issue 13's target: an evaluation over 100,000 validation rows takes less time than 100 training steps.
Median of 7 alternating runs, in one process, one thread (or the count given as the first argument).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from backprop_cli.core.build import build_run
    from backprop_cli.config import validate
    from backprop_cli.core.engine import run_steps
    from backprop_cli.runs.evaluation import measure

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print("bench_eval: one evaluation over 100,000 rows vs 100 training steps of batch 32; about 20 seconds",
          flush=True)
    cfg = validate({"model": {"input_size": 20, "hidden_sizes": [64, 64], "output_size": 3},
                    "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 1e-3},
                    "data": {"kind": "synthetic", "samples": 4096, "targets": "classes", "batch_size": 32}})
    run = build_run(cfg)
    g = torch.Generator().manual_seed(0)
    vx = torch.randn(100_000, 20, generator=g)
    vy = torch.randint(0, 3, (100_000,), generator=g)
    evals, trains, done = [], [], 0
    for _ in range(7):
        t = time.perf_counter()
        measure(run.model, run.loss_fn, "cross_entropy", vx, vy, classes=["a", "b", "c"], detail=True)
        evals.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in run_steps(run.loop(), done + 100, start_step=done, guard=run.guard):
            pass
        done += 100
        trains.append(time.perf_counter() - t)
    e, s = statistics.median(evals), statistics.median(trains)
    print(f"| case | time (median of 7) |\n|---|---|\n| one evaluation, 100,000 rows | {1000 * e:.1f} ms |\n"
          f"| 100 training steps, batch 32 | {1000 * s:.1f} ms |\n| evaluation / 100 steps | {e / s:.2f}× |")
    print(f"threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
