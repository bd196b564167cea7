"""CUDA check: no host sync on non-logging steps, and the engine's speed against a plain loop.

    python benchmarks/cuda_check.py [--steps 500] [--log-every 50] [--precision fp32 bf16 fp16]

1. Sync check. Trains the large benchmark network (1024→4096→1024, batch 512, 2048 shuffled samples,
   so that epochs start inside the run) on cuda:0 with ``torch.cuda.set_sync_debug_mode("error")``
   switched on for the whole run except the engine's one read-back per logging step: any other
   synchronising call raises.
2. Speed. Times the engine against a plain loop on the same batch (512 samples, as bench_scale.py),
   alternating, best of 3 after a warm-up. The plain loop stacks the loss and the total grad norm on
   the device and reads them back on logging steps, as the engine does; for fp16 it uses the same
   GradScaler steps (scale, unscale, step, update). Prints the GPU's name and a table.

Needs a CUDA GPU; ``--device cpu`` runs only the speed part (a smoke test of this script; the CPU
version of the sync check is tests/test_sync.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LARGE = ["model.input_size=1024", "model.hidden_size=4096", "model.output_size=1024",
         "data.batch_size=512", "data.targets=random"]


def main() -> None:
    import torch
    from torch import nn

    from backprop_cli.core import engine
    from backprop_cli.core.build import build_run
    from backprop_cli.config import load_config
    from backprop_cli.core.diagnostics import Diagnostics
    from backprop_cli.core.records import is_logging_step

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --device cpu for a smoke run of the speed part)",
              file=sys.stderr)
        raise SystemExit(2)

    runs = len(args.precision) * (1 + 2 * 3)
    print(f"expected running time: about {runs * (args.steps + args.warmup) * (0.004 if cuda else 0.15):.0f} s plus "
          f"set-up ({len(args.precision)} precision(s); a line per check as it goes)", flush=True)

    def run(precision, *sets):
        return build_run(load_config(ROOT / "configs" / "seed.yaml",
                                     [f"device={args.device}", *LARGE, f"precision={precision}", *sets]))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def probe(r):
        """train's per-layer diagnostics on its logging steps, as train runs them."""
        return Diagnostics.of(r.model, r.cfg.model.activation.name,
                              lambda s: is_logging_step(s, 1, args.log_every, r.steps))

    # 1. no sync outside the read-backs
    if cuda:
        real_read = engine.read_back

        def allowed_read(t):
            torch.cuda.set_sync_debug_mode("default")
            try:
                return real_read(t)
            finally:
                torch.cuda.set_sync_debug_mode("error")

        for precision in args.precision:
            r = run(precision, "data.samples=2048", "data.shuffle=true", f"train.steps={args.steps}")
            kw = dict(read_every=args.log_every, guard=engine.Guard(precision=precision, clip_grad_norm=1.0),
                      probe=probe(r))
            for _ in engine.run_steps(r.loop(), 3, **kw):
                pass  # warm-up (kernels, allocator, the scaler's first scale) outside the check
            sync()
            engine.read_back = allowed_read
            torch.cuda.set_sync_debug_mode("error")
            try:
                n = sum(1 for _ in engine.run_steps(r.loop(), args.steps, start_step=3, **kw))
            finally:
                torch.cuda.set_sync_debug_mode("default")
                engine.read_back = real_read
            reads = -(-(args.steps - 3) // args.log_every)
            print(f"sync check, {precision}: {n} steps ({r.batches.per_epoch} per epoch, shuffled, clipped, "
                  f"{type(r.optimizer).__name__}, per-layer diagnostics every {args.log_every}), no host sync "
                  f"outside the {reads} read-backs: OK")

    # 2. speed, engine vs plain loop, alternating, best of 3
    def engine_rate(precision):
        r = run(precision, "data.samples=512", "data.shuffle=false", f"train.steps={args.steps + args.warmup}")
        kw = dict(read_every=args.log_every, guard=engine.Guard(precision=precision), probe=probe(r))
        for _ in engine.run_steps(r.loop(), args.warmup, **kw):
            pass
        sync()
        t = time.perf_counter()
        n = sum(1 for _ in engine.run_steps(r.loop(), args.warmup + args.steps, start_step=args.warmup, **kw))
        sync()
        return n / (time.perf_counter() - t)

    def plain_rate(precision):
        r = run(precision, "data.samples=512", "data.shuffle=false")
        model, loss_fn, opt = r.model, r.loss_fn, r.optimizer
        x, y = r.batches(0)
        params = list(model.parameters())
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        scaler = torch.amp.GradScaler(r.device.type) if precision == "fp16" else None
        pending = []

        def step(i):
            with torch.autocast(r.device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            norm = nn.utils.get_total_norm([p.grad for p in params])
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            pending.append(torch.stack([loss.detach().float(), norm]))
            if (i + 1) % args.log_every == 0:
                torch.stack(pending).tolist()
                pending.clear()

        for i in range(args.warmup):
            step(i)
        if pending:
            torch.stack(pending).tolist()
            pending.clear()
        sync()
        t = time.perf_counter()
        for i in range(args.steps):
            step(i)
        if pending:
            torch.stack(pending).tolist()
        sync()
        return args.steps / (time.perf_counter() - t)

    name = torch.cuda.get_device_name() if cuda else "CPU (smoke run)"
    print(f"device: {name}, torch {torch.__version__}; large net 1024→4096→1024, batch 512, "
          f"{args.steps} timed steps after {args.warmup}, read-back every {args.log_every}, best of 3")
    print("| precision | plain loop steps/s | engine steps/s | engine / plain |\n|---|---|---|---|")
    for precision in args.precision:
        plain, ours = [], []
        for k in range(3):
            order = [(plain, plain_rate), (ours, engine_rate)]
            for out, fn in (order if k % 2 == 0 else order[::-1]):
                out.append(fn(precision))
        p, e = max(plain), max(ours)
        print(f"| {precision} | {p:,.1f} | {e:,.1f} | {e / p:.3f} |")


if __name__ == "__main__":
    main()
