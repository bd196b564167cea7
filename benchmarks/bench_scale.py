"""Scale benchmarks: the large network, and DDP with 2 processes against 1, each against a plain loop.

    python benchmarks/bench_scale.py [--device cpu|cuda] [--steps N] [--repeats 3] [--skip-ddp]

Every case runs in fresh child processes (so peak memory is the case's own), alternating plain loop and
engine run after run; the best of the repeats is shown. One-process runs are timed after 3 untimed
steps. Both loops read their numbers back as `backprop train` does: every step on the CPU, every 10th
step on CUDA (the plain loop stacks loss and total grad norm on the device until then). GFLOP/s counts 6·batch·params per step
(forward 2, backward 4) and is set against a matmul of the layer's shape timed in the same process.
Peak memory: the process's peak RSS on the CPU, torch.cuda.max_memory_allocated on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mdtable import markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (1024, 4096, 1024)
BATCH = 512
WARMUP = 3  # untimed steps before a one-process run (first-call costs: allocator, kernels)
LOG_EVERY = 10  # the read-back interval on an accelerator


def read_every(device: str) -> int:
    """How often both loops read their numbers back: as the engine's policy in `backprop train`."""
    return 1 if device == "cpu" else LOG_EVERY


def config_text(sizes, batch, steps, device) -> str:
    i, h, o = sizes
    return (f"seed: 0\ndevice: {device}\nmodel: {{input_size: {i}, hidden_size: {h}, output_size: {o}}}\n"
            f"optimizer: {{name: sgd, lr: 0.01}}\n"
            f"data: {{kind: synthetic, samples: {batch}, batch_size: {batch}, targets: random, shuffle: false}}\n"
            f"train: {{steps: {steps}}}\n")


# --------------------------------------------------------------------------- child processes


def _matmul_peak(device, batch, sizes) -> float:
    import torch

    a = torch.randn(batch, sizes[0], device=device)
    b = torch.randn(sizes[0], sizes[1], device=device)
    for _ in range(5):
        a @ b
    _sync(device)
    best, n = 0.0, 10 if torch.device(device).type == "cpu" else 200
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            a @ b
        _sync(device)
        best = max(best, 2 * batch * sizes[0] * sizes[1] * n / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device) -> float:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, steps: int, device: str, cfg_path: str) -> None:
    import torch
    from torch import nn

    from backprop_cli.core.build import build_run
    from backprop_cli.config import load_config
    from backprop_cli.core.engine import Loop, run_steps

    ddp = kind.startswith("ddp")
    rank = int(os.environ.get("RANK", "0"))
    peak = _matmul_peak(device if not ddp or device == "cpu" else f"cuda:{os.environ.get('LOCAL_RANK', '0')}",
                        BATCH, SIZES)
    if kind == "ddp-engine":
        from backprop_cli.runs.training import TrainOptions, _Silent, run_training

        cfg = load_config(cfg_path)
        t = time.perf_counter()
        summary = run_training(cfg, TrainOptions(), _Silent())
        rate = summary.steps_per_s
        params = 1024 * 4096 + 4096 + 4096 * 1024 + 1024
        device_used = cfg.device
    else:
        cfg = load_config(cfg_path)
        if ddp:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            dist.init_process_group("gloo" if device == "cpu" else "nccl")
        run = build_run(cfg)
        params = sum(p.numel() for p in run.model.parameters())
        x, y = run.batches.x, run.batches.y
        model = run.model
        if ddp:
            world = dist.get_world_size()
            n = x.shape[0] // world
            x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
            model = DistributedDataParallel(run.model)
        opt, loss_fn = run.optimizer, run.loss_fn
        plist = list(run.model.parameters())
        every = read_every(device)
        if kind in ("plain", "ddp-plain"):
            pending = []

            def step(i):
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = nn.utils.get_total_norm([p.grad for p in plist])
                opt.step()
                pending.append(torch.stack([loss.detach(), norm]))
                if (i + 1) % every == 0:  # as the engine: every step on the CPU, else on logging steps
                    rows = torch.stack(pending)
                    if ddp:  # the loss summed over ranks (the norms are the same on every rank)
                        losses = rows[:, 0].clone()
                        dist.all_reduce(losses)
                        rows = torch.cat([losses, rows[:, 1]])
                    rows.tolist()
                    pending.clear()

            for i in range(0 if ddp else WARMUP):
                step(i)
            _sync(device)
            pending.clear()
            t = time.perf_counter()
            for i in range(steps):
                step(i)
            if pending:
                torch.stack(pending).tolist()
            _sync(device)
            rate = steps / (time.perf_counter() - t)
        else:
            for _ in run_steps(Loop(model, loss_fn, opt, run.batches), WARMUP, read_every=every):
                pass
            _sync(device)
            t = time.perf_counter()
            n_rec = sum(1 for _ in run_steps(Loop(model, loss_fn, opt, run.batches), WARMUP + steps, start_step=WARMUP,
                                         read_every=every))
            _sync(device)
            rate = n_rec / (time.perf_counter() - t)
        device_used = device
        if ddp:
            dist.barrier()
    if rank == 0:
        print(json.dumps({"steps_per_s": rate, "gflops": 6 * BATCH * params * rate / 1e9,
                          "matmul_gflops": peak, "peak_mb": _peak_mb(device_used)}), flush=True)
    if ddp:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        sys.stdout.flush()
        os._exit(0)


# --------------------------------------------------------------------------- parent


def measure(kind: str, steps: int, device: str, cfg_path: str, procs: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--child", kind, "--steps", str(steps), "--device", device, "--cfg", cfg_path]
    if procs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs)) if device == "cpu" else "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               __file__, "--child", kind, "--steps", str(steps), "--device", device, "--cfg", cfg_path]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, help="timed steps (default: 20 on the CPU, 500 on CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--cfg")
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 20 if args.device == "cpu" else 500
    if args.child:
        child(args.child, args.steps, args.device, args.cfg)
        return

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "large.yaml"
        cfg.write_text(config_text(SIZES, BATCH, args.steps, args.device))
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
        print(f"machine: {name}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}; "
              f"large net 1024→4096→1024, batch {BATCH}, {args.steps} steps, best of {args.repeats}")
        runs_total = args.repeats * 2 * (1 if args.skip_ddp else 2)
        per_run = 5 + args.steps * (0.15 if args.device == "cpu" else 0.01)
        print(f"expected running time: about {runs_total * per_run:.0f} s on the README's machine "
              f"({runs_total} processes; a line per process as it goes)", flush=True)
        rows = []
        cases = [("1 process", "plain", "engine", 1)]
        if not args.skip_ddp:
            cases.append(("2 processes (DDP)", "ddp-plain", "ddp-engine", 2))
        results = {}
        for label, plain_kind, engine_kind, procs in cases:
            plain_runs, engine_runs = [], []
            for k in range(args.repeats):  # alternate run after run, and which goes first
                order = [(plain_runs, plain_kind), (engine_runs, engine_kind)]
                for runs, kind in (order if k % 2 == 0 else order[::-1]):
                    runs.append(measure(kind, args.steps, args.device, str(cfg), procs))
                    print(f"  {label}, {kind} #{k + 1}: {runs[-1]['steps_per_s']:.2f} steps/s", file=sys.stderr,
                          flush=True)
            p = max(plain_runs, key=lambda r: r["steps_per_s"])
            e = max(engine_runs, key=lambda r: r["steps_per_s"])
            results[label] = (p, e)
            for who, r in (("plain loop", p), ("engine", e)):
                rows.append((label, who, f"{r['steps_per_s']:.2f}", f"{r['gflops']:.1f}",
                             f"{r['matmul_gflops']:.1f}", f"{100 * r['gflops'] / r['matmul_gflops']:.0f}%",
                             f"{r['peak_mb']:.0f}"))
            rows.append((label, "engine / plain", f"{e['steps_per_s'] / p['steps_per_s']:.3f}", "", "", "", ""))
        head = ("case", "loop", "steps/s", "GFLOP/s", "matmul GFLOP/s", "of peak", "peak MB (rank 0)")
        print(markdown(head, rows))
        if len(results) == 2:
            one, two = results["1 process"][1], results["2 processes (DDP)"][1]
            print(f"\nengine, 2 processes vs 1: {two['steps_per_s'] / one['steps_per_s']:.2f}×")


if __name__ == "__main__":
    main()
