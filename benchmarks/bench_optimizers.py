"""Optimizer step time by implementation: torch's for-loop, foreach and fused kernels, per net size.

    python benchmarks/bench_optimizers.py [--device cpu|cuda] [--threads N] [--repeats 7] [--skip-large]

One optimizer.step() on the parameters of four nets, from the seed net (10→20→1, 241 parameters) to
the large one (1024→4096→1024, 8.4 M), gradients fixed. The three implementations take turns within
each repeat (so a busy machine slows them alike) and the table shows the fastest repeat of each.
backprop_cli.core.build.kernel_options chooses the implementation from this table. About 1-2 minutes on
the README's machine (prints a line per net as it goes).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from mdtable import markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETS = {"seed 10→20→1": (10, 20, 1), "100→100→10": (100, 100, 10), "256→1024→256": (256, 1024, 256),
        "large 1024→4096→1024": (1024, 4096, 1024)}
OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.01}),
    "sgd weight decay": ("sgd", {"lr": 0.01, "weight_decay": 1e-4}),
    "sgd momentum": ("sgd", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("adam", {"lr": 1e-3}),
    "adamw": ("adamw", {"lr": 1e-3}),
    "rmsprop": ("rmsprop", {"lr": 1e-3}),
    "adagrad": ("adagrad", {"lr": 1e-2}),
}
IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: what train picks for "
                    "all but the largest nets on this machine; see bench_threads.py)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-large", action="store_true", help="leave out the 8.4 M-parameter net")
    args = ap.parse_args()

    import torch

    from backprop_cli.core.components import OPTIMIZERS as CLASSES

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def make(cls, hyper, flags, shapes):
        params = [torch.randn(*s, device=device, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        try:
            opt = cls(params, **hyper, **flags)
            opt.step()
        except (RuntimeError, ValueError, TypeError):
            return None  # no such kernel for this optimizer on this device
        return opt

    def timed(opt, n) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(n):
            opt.step()
        sync()
        return (time.perf_counter() - t) / n

    nets = {k: v for k, v in NETS.items() if not (args.skip_large and k.startswith("large"))}
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()}, "
          f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}; time of one optimizer.step(), "
          f"fastest of {args.repeats}")
    print(f"expected running time: about {25 * len(nets) * args.repeats // 7} s here; a line per net as it goes",
          flush=True)
    rows = []
    for net, (i, h, o) in nets.items():
        shapes = [(h, i), (h,), (o, h), (o,)]
        count = sum(torch.Size(s).numel() for s in shapes)
        n = max(3, min(2000, int(2e6 // count)))
        t0 = time.perf_counter()
        for label, (name, hyper) in OPTIMIZERS.items():
            opts = {impl: make(CLASSES[name], hyper, flags, shapes) for impl, flags in IMPLEMENTATIONS.items()}
            best = {impl: float("inf") for impl in opts}
            for impl, opt in opts.items():
                if opt is not None:
                    timed(opt, max(2, n // 10))  # warm-up
            for _ in range(args.repeats):
                for impl, opt in opts.items():
                    if opt is not None:
                        best[impl] = min(best[impl], timed(opt, n))
            fastest = min((v, k) for k, v in best.items())[1]
            cells = [f"{v * 1e6:,.1f} µs" if v != float("inf") else "—" for v in best.values()]
            rows.append((net, f"{count:,}", label, *cells, fastest))
        print(f"  {net}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    head = ("net", "parameters", "optimizer", "for-loop", "foreach", "fused", "fastest")
    print(markdown(head, rows))


if __name__ == "__main__":
    main()
