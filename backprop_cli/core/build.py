"""One function from a validated config to everything a run needs: :func:`build_run`.

Every command that trains or measures (train, compare-optimizers, inspect-grads, check-grads) builds
its run here, so a config key means the same in all of them: the device, the seeded model, the loss,
the optimizer with its kernel options, the schedule, the batches, the step count, and the
:class:`~backprop_cli.core.engine.Guard` (clipping, non-finite policy, precision, zero_grad).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from backprop_cli.core.components import LOSSES, OPTIMIZERS, SCHEDULERS
from backprop_cli.config import Config, optimizer_hyperparams, resolved_steps, task_of
from backprop_cli.data.batches import Batches
from backprop_cli.data.load import load_dataset
from backprop_cli.data.tables import Dataset, Table
from backprop_cli.core.engine import Guard, Loop
from backprop_cli.errors import DataError, DeviceError
from backprop_cli.core.model import Net, build_model


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is missing is an error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {spec!r} is not available (torch.cuda.is_available() is False); use device: cpu or auto")
        dev = torch.device(spec)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device: {spec!r} is not available (this machine has {count} CUDA device(s))")
        return dev
    if spec == "mps" and not _mps_available():
        raise DeviceError("device: 'mps' is not available (torch.backends.mps.is_available() is False); use device: cpu or auto")
    return torch.device(spec)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def make_loss(spec) -> nn.Module:
    return LOSSES[spec.name].module(spec)


def auto_weights(task: str, y: torch.Tensor, outputs: int) -> list[float]:
    """``auto`` loss weights from the training targets ``y``. Classes (cross_entropy's class_weights):
    n / (k · count_c), so that every class weighs as much in the loss as a class of n / k rows would (a
    class without training rows gets 1); binary (bce_with_logits' pos_weight): count_negative /
    count_positive per target column (1 for a column without positives or negatives)."""
    if task == "classes":
        counts = torch.bincount(y.reshape(-1).long().cpu(), minlength=outputs).double()
        n, k = float(counts.sum()), outputs
        return [n / (k * float(c)) if c > 0 else 1.0 for c in counts.tolist()]
    cols = y.reshape(y.shape[0], -1).double().cpu()
    pos = (cols > 0.5).sum(dim=0).double()
    neg = cols.shape[0] - pos
    return [float(q / p) if p > 0 and q > 0 else 1.0 for p, q in zip(pos.tolist(), neg.tolist())]


def resolve_loss(cfg: Config, y_train: torch.Tensor) -> tuple[Config, Optional[str]]:
    """The config with ``loss.class_weights: auto`` / ``loss.pos_weight: auto`` replaced by the weights
    computed from the training rows (:func:`auto_weights`), so that the run, its checkpoint (whose config
    then holds the numbers: evaluate measures with them) and check-grads use the same loss; and the key that
    was auto (None when none was)."""
    key = "class_weights" if task_of(cfg.loss) == "classes" else "pos_weight" if task_of(cfg.loss) == "binary" else None
    if key is None or getattr(cfg.loss, key, None) != "auto":
        return cfg, None
    weights = auto_weights(task_of(cfg.loss), y_train, cfg.model.output_size)
    return cfg.model_copy(update={"loss": cfg.loss.model_copy(update={key: weights})}), key


def guard_of(cfg: Config) -> Guard:
    """The engine's protections, from the config: the same in every command that trains."""
    t = cfg.train
    return Guard(clip_grad_norm=t.clip_grad_norm, on_nonfinite=t.on_nonfinite, max_skips=t.max_skips,
                 precision=cfg.precision, zero_grad=t.zero_grad)


# --------------------------------------------------------------------------- optimizers


def kernel_options(specs, device: Optional[torch.device]) -> dict:
    """The kernel options of a set of optimizers that must share them (``train``: one; compare: all),
    chosen by measurement (``benchmarks/bench_optimizers.py``, table in the README).

    ``fused`` when every one of them has a fused kernel on the device (torch has them for SGD, Adam,
    AdamW and Adagrad on the CPU, most of them on CUDA): one kernel per step, 1.2-10× faster than the
    alternatives at every size from the seed net to 8.4 M parameters. The exception is plain SGD (no
    momentum, no weight decay) on the CPU, whose for-loop step (one ``add_`` per tensor) is as fast
    or faster at every size: a set of plain SGD runs only gets the for-loop kernel. Otherwise torch's
    own defaults for all of them: the multi-tensor (foreach) kernels on CUDA, the for-loop ones elsewhere.
    """
    cuda = device is not None and device.type == "cuda"
    plain_sgd_only = not cuda and all(_plain_sgd(spec) for spec in specs)
    if specs and not plain_sgd_only and all(has_fused_kernel(spec, device) for spec in specs):
        return {"fused": True}
    return {"foreach": cuda}


def _plain_sgd(spec) -> bool:
    return spec.name == "sgd" and spec.momentum == 0 and spec.weight_decay == 0


def has_fused_kernel(spec, device: Optional[torch.device]) -> bool:
    """Whether torch builds this optimizer, with these hyperparameters, with ``fused=True`` on the device."""
    cls = OPTIMIZERS[spec.name]
    if "fused" not in inspect.signature(cls.__init__).parameters:
        return False
    probe = torch.zeros(1, device=device or torch.device("cpu"), requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:  # a step too: torch 2.11 builds a fused Adagrad on CUDA and refuses it at its first step
        cls([probe], **optimizer_hyperparams(spec), fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


def make_optimizer(spec, params, device: Optional[torch.device] = None,
                   options: Optional[dict] = None) -> torch.optim.Optimizer:
    """The configured optimizer with kernel ``options`` (default: :func:`kernel_options` of this one)."""
    options = kernel_options([spec], device) if options is None else options
    return OPTIMIZERS[spec.name](list(params), **optimizer_hyperparams(spec), **options)


def implementation_name(optimizer: torch.optim.Optimizer) -> str:
    """Which of torch's implementations the optimizer runs: fused, foreach or for-loop."""
    d = optimizer.defaults
    return "fused" if d.get("fused") else "foreach" if d.get("foreach") else "for-loop"


def make_scheduler(spec, optimizer: torch.optim.Optimizer, total_steps: int):
    """The learning-rate schedule, stepped once per optimizer step (None for ``none``)."""
    return SCHEDULERS[spec.name](spec, optimizer, total_steps)


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    cfg: Config
    device: torch.device
    model: Net
    loss_fn: nn.Module
    optimizer: Optional[torch.optim.Optimizer]  # None: built with optimizer=False (no training)
    dataset: Dataset
    batches: Batches
    steps: int
    scheduler: object = None
    guard: Guard = Guard()
    drop_last_why: Optional[str] = None  # why drop_last is on when the config did not ask (batch norm)
    auto_weights: Optional[str] = None  # the loss key whose weights were auto (cfg.loss holds the numbers)

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters()]

    def loop(self) -> Loop:
        return Loop(self.model, self.loss_fn, self.optimizer, self.batches, self.scheduler)


def build_run(cfg: Config, *, dataset: Dataset | Table | None = None, device: Optional[torch.device] = None,
              kernel: Optional[dict] = None, optimizer: bool = True) -> Run:
    """Everything a run of ``cfg`` needs. ``dataset``: data already read (compare reads it once for
    all its runs); ``kernel``: optimizer kernel options shared with other runs (compare).
    ``optimizer=False``: no optimizer and no schedule (None), for commands that only run a forward and a
    backward (explain --config, graph): building a torch optimizer imports torch._dynamo, about a second
    of start-up (benchmarks/README.md)."""
    device = device if device is not None else resolve_device(cfg.device)
    if dataset is None or isinstance(dataset, Table):
        dataset = load_dataset(cfg, dataset)
    enc = dataset.table.encoding if dataset.table is not None else None
    model = build_model(cfg.model, cfg.seed, enc.embeddings() if enc is not None else None).to(device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), device, kernel) if optimizer else None
    x, y = dataset.on(device)
    cfg, auto_key = resolve_loss(cfg, y)
    drop_last, why = batch_norm_drop_last(cfg, x.shape[0])
    batches = Batches(x, y, cfg.data.batch_size, cfg.data.shuffle, cfg.seed, drop_last)
    steps = resolved_steps(cfg, batches.per_epoch)
    scheduler = make_scheduler(cfg.scheduler, optimizer, steps) if optimizer is not None else None
    return Run(cfg, device, model, make_loss(cfg.loss).to(device), optimizer, dataset, batches, steps, scheduler,
               guard_of(cfg), drop_last_why=why, auto_weights=auto_key)


def batch_norm_drop_last(cfg: Config, rows: int) -> tuple[bool, Optional[str]]:
    """``data.drop_last``, turned on where batch norm would meet a training batch of one row (its variance
    over one row is 0: torch refuses it), with the reason the start panel shows; else the config's."""
    size = cfg.data.batch_size
    if cfg.model.norm != "batch" or cfg.data.drop_last or rows % size != 1:
        return cfg.data.drop_last, None
    if rows == 1:
        raise DataError(f"{cfg.source}: model.norm: batch norm needs at least 2 training rows per batch, and the "
                        "data has 1 training row; use model.norm: layer or more data")
    return True, (f"on by itself: {rows} rows in batches of {size} would leave a last batch of 1 row, too few "
                  "for batch norm's statistics")


def describe_run(run: Run) -> dict:
    """What the start panel shows: plain data, rendered by render/train.py."""
    cfg, model = run.cfg, run.model
    act = cfg.model.activation.model_dump()
    loss = cfg.loss.model_dump()
    opt_spec = cfg.optimizer
    return {
        "model": {
            "sizes": cfg.model.widths,
            "activation": act.pop("name"),
            "activation_options": act,
            "bias": cfg.model.bias,
            "init": cfg.model.init,
            "norm": cfg.model.norm,
            "dropout": cfg.model.dropouts,
            "residual_layers": [f"layer{b.k}" for b in model.blocks if b.residual],
            "params": {n: list(p.shape) for n, p in model.named_parameters()},
            "parameter_count": sum(p.numel() for p in model.parameters()),
        },
        "loss": {"name": loss.pop("name"), "options": loss, "auto_weights": run.auto_weights},
        "task": task_of(cfg.loss),
        "optimizer": {"name": opt_spec.name, "options": optimizer_hyperparams(opt_spec),
                      "implementation": implementation_name(run.optimizer)},
        "device": str(run.device),
        "data": _describe_data(run),
        "steps": run.steps,
        "seed": cfg.seed,
        "scheduler": cfg.scheduler.model_dump(),
        "clip_grad_norm": cfg.train.clip_grad_norm,
        "on_nonfinite": cfg.train.on_nonfinite,
        "zero_grad": cfg.train.zero_grad,
        "precision": cfg.precision,
        "compile": cfg.compile,
        "threads": torch.get_num_threads(),
    }


def _describe_data(run: Run) -> dict:
    table = run.dataset.table
    cfg = run.cfg.data
    out = {
        "source": run.dataset.source,
        "samples": run.dataset.samples,
        "batch_size": run.batches.batch_size,
        "batches_per_epoch": run.batches.per_epoch,
        "shuffle": run.batches.shuffle,
        "drop_last": run.batches.drop_last,
        "drop_last_why": run.drop_last_why,
        "validation": None,
        "dropped": table.dropped if table is not None else 0,
        "standardize": cfg.standardize,
        "standardize_target": cfg.standardize_target,
        "classes": list(table.classes) if table is not None and table.classes is not None else None,
        "inputs": table.encoding.summary() if table is not None and table.encoding is not None else None,
        "dropped_target": table.dropped_target if table is not None else 0,
    }
    if run.dataset.val_samples:
        out["validation"] = {"rows": run.dataset.val_samples, "source": table.val_source if table else None}
    return out
