"""CUDA check: no host sync on non-logging steps, and the engine's speed against a plain loop.

    python benchmarks/cuda_check.py [--steps 200] [--log-every 50] [--precision fp32|bf16]

Trains the large benchmark network (1024→4096→1024, batch 512) on cuda:0 with
``torch.cuda.set_sync_debug_mode("error")`` switched on for the whole run except the engine's one
read-back per logging step; any other synchronising call raises. Then times the engine against a plain
loop that reads loss.item() and the total grad norm only on logging steps. Prints the GPU's name.
Needs a CUDA GPU; exits 2 without one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch
    from torch import nn

    from backprop_cli import engine
    from backprop_cli.build import build_run
    from backprop_cli.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        raise SystemExit(2)

    sets = ["device=cuda", "model.input_size=1024", "model.hidden_size=4096", "model.output_size=1024",
            "data.samples=2048", "data.batch_size=512", "data.targets=random", "data.shuffle=false",
            f"train.steps={args.steps}", f"precision={args.precision}"]

    def run():
        return build_run(load_config(ROOT / "configs" / "seed.yaml", sets))

    # 1. no sync outside the read-backs
    real_read = engine.read_back

    def allowed_read(t):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return real_read(t)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    engine.read_back = allowed_read
    r = run()
    for _ in engine.train(r.model, r.loss_fn, r.optimizer, r.batches, 3, sync_every=1):
        pass  # warm-up (kernels, allocator) outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        n = sum(1 for _ in engine.train(r.model, r.loss_fn, r.optimizer, r.batches, args.steps, start_step=3,
                                        sync_every=args.log_every, precision=args.precision))
    finally:
        torch.cuda.set_sync_debug_mode("default")
        engine.read_back = real_read
    print(f"sync check: {n} steps, no host sync outside the {-(-(args.steps - 3) // args.log_every)} read-backs: OK")

    # 2. speed, engine vs plain loop, alternating, best of 3
    def engine_rate():
        r = run()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in engine.train(r.model, r.loss_fn, r.optimizer, r.batches, args.steps, sync_every=args.log_every,
                              precision=args.precision):
            pass
        torch.cuda.synchronize()
        return args.steps / (time.perf_counter() - t)

    def plain_rate():
        r = run()
        x, y = r.batches.x, r.batches.y
        params = list(r.model.parameters())
        dtype = {"fp32": None, "bf16": torch.bfloat16}[args.precision]
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(args.steps):
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = r.loss_fn(r.model(x), y)
            r.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.get_total_norm([p.grad for p in params])
            r.optimizer.step()
            if (i + 1) % args.log_every == 0:
                loss.item(), norm.item()
        torch.cuda.synchronize()
        return args.steps / (time.perf_counter() - t)

    plain, ours = [], []
    for _ in range(3):
        plain.append(plain_rate())
        ours.append(engine_rate())
    p, e = max(plain), max(ours)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, precision {args.precision}")
    print("| loop | steps/s |\n|---|---|")
    print(f"| plain loop | {p:,.1f} |\n| engine | {e:,.1f} |\n| engine / plain | {e / p:.3f} |")


if __name__ == "__main__":
    main()
