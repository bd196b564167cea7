"""The plain PyTorch script that benchmarks/bench_command.py and bench_peers.py hold `backprop train` against.

    python benchmarks/plain_train.py --sizes 10,20,1 --samples 5 --batch 5 --steps 20000 \
        --metrics run.jsonl --log-every 500

What a careful person writes by hand for the same work as `backprop train`: the same network
(``layer1 → ReLU → layer2``, torch's default init under ``torch.manual_seed(seed)``), the same seeded
synthetic data (or a CSV), the same optimizer with torch's default implementation, and at every step
the loss and the gradient norms (total and per parameter) read back with one ``.tolist()``, one JSON
line per step in ``--metrics`` (the same keys as backprop's), and a printed row every ``--log-every``
steps. It imports nothing from backprop.

``--collector-like-backprop`` gives it the garbage-collector settings of the ``backprop`` process
(backprop_cli/__main__.py: a collection every 10,000 allocations, the heap frozen at exit), so that
bench_command.py can show what backprop's own code costs at start-up apart from what those settings save.
"""

from __future__ import annotations

import argparse
import gc
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,20,1", help="input,hidden...,output")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="instead of --steps: passes over the data")
    ap.add_argument("--shuffle", action="store_true", help="a new seeded order of the rows every epoch")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--loss", default="mse", choices=["mse", "cross_entropy"])
    ap.add_argument("--csv", default=None, help="train on this CSV (header row; the last column is the target)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--metrics", default=None)
    ap.add_argument("--log-every", type=int, default=0)
    ap.add_argument("--collector-like-backprop", action="store_true")
    args = ap.parse_args()
    if args.collector_like_backprop:
        gc.set_threshold(10_000, *gc.get_threshold()[1:])

    import torch
    from torch import nn

    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [int(s) for s in args.sizes.split(",")]
    if args.csv:
        import numpy as np

        table = np.loadtxt(args.csv, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
        x = torch.from_numpy(table[:, :-1].copy())
        y = torch.from_numpy(table[:, -1:].copy())
        if args.loss == "cross_entropy":
            y = y[:, 0].long()
    else:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.samples, widths[0], generator=g)
        y = torch.randn(args.samples, widths[-1], generator=g)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            for k, (a, b) in enumerate(zip(widths, widths[1:]), start=1):
                setattr(self, f"layer{k}", nn.Linear(a, b))
            self.n = len(widths) - 1

        def forward(self, h):
            for k in range(1, self.n):
                h = torch.relu(getattr(self, f"layer{k}")(h))
            return getattr(self, f"layer{self.n}")(h)

    torch.manual_seed(args.seed)
    model = Net()
    loss_fn = nn.MSELoss() if args.loss == "mse" else nn.CrossEntropyLoss()
    cls = torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam
    opt = cls(model.parameters(), lr=args.lr)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    n = x.shape[0]
    per_epoch = -(-n // args.batch)
    steps = args.epochs * per_epoch if args.epochs else args.steps
    out = open(args.metrics, "w") if args.metrics else None
    print(f"plain script: {'→'.join(map(str, widths))}, {n} samples, batch {args.batch}, {steps} steps, "
          f"{torch.get_num_threads()} thread(s)", flush=True)

    model.train()
    t0 = time.perf_counter()
    order = None
    for i in range(steps):
        epoch, k = divmod(i, per_epoch)
        if args.shuffle and k == 0:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1_000_003 + epoch))
        rows = slice(k * args.batch, (k + 1) * args.batch)
        xb, yb = (x[order[rows]], y[order[rows]]) if order is not None else (x[rows], y[rows])
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms = [p.grad.norm() for p in params]
        total = torch.linalg.vector_norm(torch.stack(norms))
        opt.step()
        values = torch.stack([loss.detach(), total, *norms]).tolist()
        lr = opt.param_groups[0]["lr"]
        elapsed = time.perf_counter() - t0
        if out is not None:
            out.write(json.dumps({"step": i + 1, "loss": values[0], "grad_norm": values[1],
                                  "grad_norms": dict(zip(names, values[2:])), "lr": lr, "time": elapsed}) + "\n")
        if args.log_every and ((i + 1) % args.log_every == 0 or i == 0 or i + 1 == steps):
            print(f"{i + 1:>7} loss {values[0]:.6g} grad_norm {values[1]:.4g}", flush=True)
    if out is not None:
        out.close()
    print(f"done: {steps} steps in {time.perf_counter() - t0:.2f} s, final loss {values[0]:.6g}")
    if args.collector_like_backprop:
        gc.freeze()  # the last thing before the exit, as backprop's entry does


if __name__ == "__main__":
    main()
