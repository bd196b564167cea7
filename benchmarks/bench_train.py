"""Time the engine against a plain PyTorch loop doing the same work, and `backprop --help`.

    python benchmarks/bench_train.py [--small-steps 20000] [--large-steps 10] [--repeats 3]

Both loops run in this one process, alternating run after run; the table shows the best of the
repeats for each. The plain loop reads loss.item() and the total grad norm every step; the engine
yields a full record (loss, total and per-parameter norms, lr, time) every step, all kept in memory.
Each case runs with the threads `backprop train` picks for it (distributed.set_threads). About a
minute on the README's machine (a line per run as it goes); benchmarks/bench_command.py times the
whole `backprop train` process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backprop_cli.core.build import build_run  # noqa: E402
from backprop_cli.config import flops_per_step, load_config  # noqa: E402
from backprop_cli.runs.distributed import set_threads  # noqa: E402
from backprop_cli.core.engine import run_steps  # noqa: E402

from mdtable import markdown


def config(sizes, batch, steps):
    i, h, o = sizes
    return load_config(ROOT / "configs" / "seed.yaml", [
        "device=cpu", f"model.input_size={i}", f"model.hidden_size={h}", f"model.output_size={o}",
        f"data.samples={batch}", f"data.batch_size={batch}", f"train.steps={steps}"])


def make_run(sizes, batch, steps):
    return build_run(config(sizes, batch, steps))


def engine_loop(run) -> float:
    t = time.perf_counter()
    records = list(run_steps(run.loop(), run.steps, guard=run.guard))
    elapsed = time.perf_counter() - t
    assert len(records) == run.steps
    return run.steps / elapsed


def plain_loop(run) -> float:
    model, loss_fn, opt = run.model, run.loss_fn, run.optimizer
    x, y, steps = run.batches.x, run.batches.y, run.steps
    params = list(model.parameters())
    losses, norms = [], []
    t = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.get_total_norm([p.grad for p in params])
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return steps / (time.perf_counter() - t)


def compare(name, sizes, batch, steps, repeats):
    threads = set_threads(None, flops_per_step(config(sizes, batch, steps)))
    ours, theirs = [], []
    for k in range(repeats):
        order = [(theirs, plain_loop), (ours, engine_loop)]
        for rates, loop in (order if k % 2 == 0 else order[::-1]):
            rates.append(loop(make_run(sizes, batch, steps)))
        print(f"  {name} #{k + 1}: plain {theirs[-1]:,.1f} steps/s, engine {ours[-1]:,.1f} steps/s "
              f"(threads {threads})", file=sys.stderr, flush=True)
    best_ours, best_theirs = max(ours), max(theirs)
    return (name, f"{steps}", threads.split()[0], f"{best_theirs:,.1f}", f"{best_ours:,.1f}",
            f"{best_ours / best_theirs:.3f}")


def help_time(repeats=7) -> float:
    exe = Path(sys.executable).with_name("backprop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "backprop_cli"]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd + ["--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-steps", type=int, default=20000)
    ap.add_argument("--large-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()

    print(f"machine: {platform.machine()}, torch {torch.__version__}, Python {platform.python_version()}")
    estimate = 2 * args.repeats * (args.small_steps / 3000 + (0 if args.skip_large else args.large_steps / 6)) + 2
    print(f"expected running time: about {estimate:.0f} s on the README's machine (a line per run as it goes)",
          flush=True)
    rows = [compare("seed net 10→20→1, batch 5", (10, 20, 1), 5, args.small_steps, args.repeats)]
    if not args.skip_large:
        rows.append(compare("large 1024→4096→1024, batch 512", (1024, 4096, 1024), 512,
                            args.large_steps, args.repeats))
    head = ("case", "steps", "threads", "plain loop steps/s", "engine steps/s", "engine / plain")
    print(markdown(head, rows))
    print(f"\n`backprop --help`: {help_time():.3f} s (median of 7 runs, new process each)")


if __name__ == "__main__":
    main()
