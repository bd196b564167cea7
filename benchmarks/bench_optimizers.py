"""Optimizer step time by implementation: torch's for-loop, foreach and fused kernels.

    python benchmarks/bench_optimizers.py [--device cpu|cuda]

One optimizer.step() on the parameters of the seed net (10→20→1) and of the large net
(1024→4096→1024), gradients fixed, median of 5 timings after a warm-up. `train` uses the fused kernel
where torch has one for the optimizer on the device (backprop_cli.build.implementation_flags); this
table is why.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETS = {"seed 10→20→1": (10, 20, 1), "large 1024→4096→1024": (1024, 4096, 1024)}
OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.01}),
    "sgd momentum": ("sgd", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("adam", {"lr": 1e-3}),
    "adamw": ("adamw", {"lr": 1e-3}),
    "rmsprop": ("rmsprop", {"lr": 1e-3}),
    "adagrad": ("adagrad", {"lr": 1e-2}),
}
IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    import torch

    from backprop_cli.build import OPTIMIZER_CLASSES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step_time(cls, hyper, flags, shapes, n) -> float | None:
        params = [torch.randn(*s, device=device, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        try:
            opt = cls(params, **hyper, **flags)
            opt.step()
        except (RuntimeError, ValueError, TypeError):
            return None  # no such kernel for this optimizer on this device
        for _ in range(max(3, n // 10)):
            opt.step()
        times = []
        for _ in range(5):
            sync()
            t = time.perf_counter()
            for _ in range(n):
                opt.step()
            sync()
            times.append((time.perf_counter() - t) / n)
        return statistics.median(times)

    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; time of one optimizer.step()")
    print("| net | optimizer | for-loop | foreach | fused | fused vs for-loop |\n|---|---|---|---|---|---|")
    for net, (i, h, o) in NETS.items():
        shapes = [(h, i), (h,), (o, h), (o,)]
        n = 2000 if h < 100 else 20
        for label, (name, hyper) in OPTIMIZERS.items():
            t = {impl: step_time(OPTIMIZER_CLASSES[name], hyper, flags, shapes, n)
                 for impl, flags in IMPLEMENTATIONS.items()}
            cells = [f"{v * 1e6:,.1f} µs" if v is not None else "—" for v in t.values()]
            ratio = f"{t['for-loop'] / t['fused']:.2f}×" if t["fused"] else "—"
            print(f"| {net} | {label} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
