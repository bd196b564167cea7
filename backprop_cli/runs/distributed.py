"""Training under torchrun: DistributedDataParallel with gloo (CPU) or nccl (CUDA).

Each rank takes a disjoint slice of every global batch (``data.batch_size`` is the global batch).
The loss each rank backpropagates is scaled so that DDP's gradient average equals the gradient of
the global batch, even when the slices differ in size; the reported loss is the global batch's loss
(one all-reduce at each read-back). Only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
from torch import nn

from backprop_cli.errors import BackpropError, DataError, DeviceError
from backprop_cli.torchrun import rank, under_torchrun  # noqa: F401 - re-exported

TIMEOUT = timedelta(seconds=120)


THREADS_PER_CORE = 4  # the most --threads may ask for: more only slows torch down, and OpenMP aborts
# Below this much work per step (6 · batch · parameters) one thread is as fast as all cores or faster:
# the threads of a small step spend more time meeting than working, and on a busy machine a second
# thread that waits for a core can make each step 10-50× slower. Measured by benchmarks/bench_threads.py
# on the README's machine at load 1 (table under Performance): both cores paid from 1.3e7 and 5.1e7
# FLOP per step in two runs (1.4× at 1e8, 1.6-1.9× above); the larger of the two is kept.
THREADS_THRESHOLD_FLOPS = 5e7
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before anything here changes it: the cores, or OMP_NUM_THREADS


def set_threads(threads: Optional[int], flops: Optional[float] = None) -> str:
    """Set torch's intra-op threads and say how many and why (the start panel shows it).

    ``--threads N`` wins; else OMP_NUM_THREADS (torchrun sets 1) is honoured; else under torchrun
    torch's default divided among the processes of this machine; else by the work per step
    (``flops``): 1 thread below :data:`THREADS_THRESHOLD_FLOPS`, torch's default (all cores) from it.

    N is at most THREADS_PER_CORE × the cores (``--threads 20000`` aborted in libgomp, 100000
    segfaulted): more is one BackpropError line; so is an OMP_NUM_THREADS beyond that bound.
    """
    if threads is not None:
        cores = os.cpu_count() or 1
        if threads < 1:
            raise BackpropError(f"--threads {threads}: at least 1")
        if threads > THREADS_PER_CORE * cores:
            raise BackpropError(f"--threads {threads}: at most {THREADS_PER_CORE * cores} on this machine "
                                f"({THREADS_PER_CORE} × {cores} cores)")
        torch.set_num_threads(threads)
        return f"{threads} (--threads)"
    note = ""  # why an OMP_NUM_THREADS that is set does not decide
    if "OMP_NUM_THREADS" in os.environ:
        omp = os.environ["OMP_NUM_THREADS"]
        if _omp_threads(omp):
            return f"{torch.get_num_threads()} (OMP_NUM_THREADS={omp})"
        # OpenMP ignores a value that is not a number of threads (it says so on stderr): so do we
        note = f"OMP_NUM_THREADS={_shown(omp)!r} ignored: not a number of threads"
    if under_torchrun():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        n = max(1, (os.cpu_count() or 1) // max(1, local))
        torch.set_num_threads(n)
        return f"{n} ({os.cpu_count()} cores / {local} processes)"

    def why(reason: str) -> str:
        return "; ".join(filter(None, (reason, note)))

    if flops is None:
        return f"{torch.get_num_threads()}" + (f" ({note})" if note else "")
    cores = (os.cpu_count() or 1) if note else TORCH_DEFAULT_THREADS  # torch took the bad value as unset
    if cores > 1 and flops < THREADS_THRESHOLD_FLOPS:
        torch.set_num_threads(1)
        shown = si(flops)
        if shown == si(THREADS_THRESHOLD_FLOPS):  # just below it: "50 MFLOP < 50 MFLOP" would read wrong
            shown = f"{flops:,.0f} "
        return f"1 ({why(f'small step: {shown}FLOP < {si(THREADS_THRESHOLD_FLOPS)}FLOP')})"
    torch.set_num_threads(cores)
    return f"{cores} ({why(f'all cores: {si(flops)}FLOP per step')})" if cores > 1 else f"1 ({why('one core')})"


def _omp_threads(text: str) -> Optional[int]:
    """The thread count of OMP_NUM_THREADS's first level (OpenMP takes a list, one number per nesting
    level), or None where OpenMP ignores the value (``0``, ``abc``, ``1.5``, empty). Held to the bound of
    ``--threads``: libgomp reads it when torch loads and aborts or crashes at the first parallel region
    far beyond it; more is one BackpropError line."""
    cores = os.cpu_count() or 1
    first = text.split(",")[0].strip()
    if not (first.isascii() and first.isdigit()):
        return None
    if len(first) > 9 or int(first) > THREADS_PER_CORE * cores:
        raise BackpropError(f"OMP_NUM_THREADS={_shown(text)}: at most {THREADS_PER_CORE * cores} on this machine "
                            f"({THREADS_PER_CORE} × {cores} cores); lower it or unset it")
    return int(first) or None


def _shown(text: str) -> str:
    """An environment value as a message shows it: at most 20 characters."""
    return text if len(text) <= 20 else text[:17] + "..."


def si(x: float) -> str:
    """``7.2 k``, ``50 M``, ``26 G``: a number with an SI prefix and a trailing space."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.3g} {prefix}"
    return f"{x:.3g} "


@dataclass
class Context:
    rank: int
    local_rank: int
    world: int
    backend: str
    device: torch.device
    stop_source: Optional[object] = None  # a callable: True once this rank was asked to stop
    stop_agreed: bool = False  # some rank was asked to stop (learnt in the last reduce_stats)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def reduce_stats(self, stats: torch.Tensor) -> torch.Tensor:
        """Mean of the loss column over ranks (the other columns are already identical: synced grads).

        The same all-reduce carries each rank's stop request, so a Ctrl-C costs no extra collective.
        """
        import torch.distributed as dist

        out = stats.clone()
        loss = out[..., 0].reshape(-1)
        stop = 1.0 if self.stop_source is not None and self.stop_source() else 0.0
        packed = torch.cat([loss, torch.tensor([stop], dtype=loss.dtype, device=loss.device)])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        out[..., 0] = (packed[:-1] / self.world).reshape(out[..., 0].shape)
        self.stop_agreed = self.stop_agreed or bool(packed[-1] > 0)  # at a read-back: no extra sync
        return out

    def distribute(self, loop):
        """The rank's loop: its slice of each global batch, the loss scaled to match, the model in DDP."""
        from backprop_cli.core.engine import Loop

        batches = ShardedBatches(loop.batches, self)
        return Loop(self.wrap(loop.model), ShardLoss(loop.loss_fn, batches), loop.optimizer, batches, loop.scheduler)

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def start(backend: str, device_spec: str) -> Context:
    """Join the process group torchrun set up; one device per rank (cuda:LOCAL_RANK)."""
    import torch.distributed as dist

    rank_, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {device_spec!r} is not available (torch.cuda.is_available() is False)")
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"rank {rank_} wants cuda:{local_rank} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device_spec == "mps":
        raise DeviceError("device: 'mps' cannot be used with torchrun; use cpu (gloo) or cuda (nccl)")
    else:
        device = torch.device("cpu")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise DeviceError("distributed.backend: nccl needs CUDA devices; use gloo (or auto) on the CPU")
    # nccl: bind the group to this rank's GPU now (eager init; no "guessing the device" later)
    dist.init_process_group(backend=backend, timeout=TIMEOUT, device_id=device if backend == "nccl" else None)
    return Context(rank_, local_rank, world, backend, device)


def finish(code: int) -> None:
    """Flush, leave the process group and exit at once.

    torch 2.13 + gloo can abort at interpreter exit ("terminate called without an active
    exception") even after destroy_process_group(); leaving through os._exit avoids it.
    """
    import torch.distributed as dist

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        os._exit(code)


class ShardedBatches:
    """Rank r's slice of each global batch: rows split as evenly as possible, in rank order."""

    def __init__(self, batches, ctx: Context):
        self.batches, self.ctx = batches, ctx
        self.local = self.total = 0
        smallest = min(batches.batch_size, batches.samples - (batches.per_epoch - 1) * batches.batch_size)
        if smallest < ctx.world:
            raise DataError(f"a batch of {smallest} rows cannot be split over {ctx.world} processes; "
                            "raise data.batch_size or use fewer processes")

    def __call__(self, index: int):
        x, y = self.batches(index)
        total, world, r = x.shape[0], self.ctx.world, self.ctx.rank
        base, extra = divmod(total, world)
        lo = r * base + min(r, extra)
        size = base + (1 if r < extra else 0)
        self.local, self.total = size, total
        return x[lo:lo + size], y[lo:lo + size]


class ShardLoss(nn.Module):
    """The rank's loss, scaled so that DDP's mean of gradients is the global batch's gradient.

    mean reduction: × local_rows · world / global_rows; sum reduction: × world.
    """

    def __init__(self, loss_fn: nn.Module, batches: ShardedBatches):
        super().__init__()
        self.loss_fn, self.batches = loss_fn, batches

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(output, target)
        world = self.batches.ctx.world
        if getattr(self.loss_fn, "reduction", "mean") == "sum":
            return loss * world
        return loss * (self.batches.local * world / self.batches.total)


class AgreedStop:
    """A stop request (signal) that every rank acts on at the same step: each rank's request travels
    in the loss all-reduce of :meth:`Context.reduce_stats`, so all ranks learn it at the same read-back."""

    def __init__(self, local, ctx: Context):
        self.local, self.ctx = local, ctx
        ctx.stop_source = local

    def __call__(self) -> bool:
        return self.ctx.stop_agreed
