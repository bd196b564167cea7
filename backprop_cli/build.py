"""From a validated Config to the objects a run needs: device, model, loss, optimizer, batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backprop_cli.config import Config, optimizer_hyperparams
from backprop_cli.data import Batches, Dataset, load_dataset
from backprop_cli.errors import DeviceError
from backprop_cli.model import TwoLayerNet, build_model

OPTIMIZER_CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


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
    name, red = spec.name, spec.reduction
    if name == "mse":
        return nn.MSELoss(reduction=red)
    if name == "l1":
        return nn.L1Loss(reduction=red)
    if name == "huber":
        return nn.HuberLoss(reduction=red, delta=spec.delta)
    if name == "smooth_l1":
        return nn.SmoothL1Loss(reduction=red, beta=spec.beta)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(reduction=red, label_smoothing=spec.label_smoothing)
    if name == "bce_with_logits":
        return nn.BCEWithLogitsLoss(reduction=red)
    raise ValueError(f"unknown loss {name!r}")


def implementation_flags(specs, device: torch.device | None) -> dict:
    """The kernel flags of a set of optimizers that must share them (``train``: one; compare: all).

    ``fused`` when every one of them has a fused kernel on the device (torch has them for SGD, Adam,
    AdamW and Adagrad on the CPU, most of them on CUDA): one kernel per step, several times faster
    than the alternatives, even on tiny nets. Otherwise torch's own defaults for all of them: the
    multi-tensor (foreach) kernels on CUDA, the for-loop ones elsewhere.
    """
    if specs and all(has_fused_kernel(spec, device) for spec in specs):
        return {"fused": True}
    return {"foreach": device is not None and device.type == "cuda"}


def has_fused_kernel(spec, device: torch.device | None) -> bool:
    """Whether torch builds this optimizer, with these hyperparameters, with ``fused=True`` on the device."""
    import inspect

    cls = OPTIMIZER_CLASSES[spec.name]
    if "fused" not in inspect.signature(cls.__init__).parameters:
        return False
    probe = torch.zeros(1, device=device or torch.device("cpu"), requires_grad=True)
    try:
        cls([probe], **optimizer_hyperparams(spec), fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def make_optimizer(spec, params, device: torch.device | None = None, flags: dict | None = None) -> torch.optim.Optimizer:
    """The configured optimizer with ``flags`` (default: :func:`implementation_flags` of this one)."""
    flags = implementation_flags([spec], device) if flags is None else flags
    return OPTIMIZER_CLASSES[spec.name](list(params), **optimizer_hyperparams(spec), **flags)


def implementation_name(optimizer: torch.optim.Optimizer) -> str:
    """Which of torch's implementations the optimizer runs: fused, foreach or for-loop."""
    d = optimizer.defaults
    return "fused" if d.get("fused") else "foreach" if d.get("foreach") else "for-loop"


def make_scheduler(spec, optimizer: torch.optim.Optimizer, total_steps: int):
    """The learning-rate schedule, stepped once per optimizer step (None for ``none``)."""
    import math

    from torch.optim import lr_scheduler

    if spec.name == "none":
        return None
    if spec.name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
    if spec.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.T_max or total_steps, eta_min=spec.eta_min)
    if spec.name == "warmup_cosine":
        warmup = spec.warmup_steps
        length = spec.T_max or max(1, total_steps - warmup)
        base = optimizer.param_groups[0]["lr"]
        floor = spec.eta_min / base

        def factor(s: int) -> float:
            if s < warmup:
                return (s + 1) / warmup
            t = min(s - warmup, length) / length
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        return lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"unknown scheduler {spec.name!r}")


@dataclass
class Run:
    cfg: Config
    device: torch.device
    model: TwoLayerNet
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    dataset: Dataset
    batches: Batches
    steps: int
    scheduler: object = None

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters()]


def build_run(cfg: Config, *, dataset: Dataset | None = None, device: torch.device | None = None) -> Run:
    from backprop_cli.config import resolved_steps

    device = device if device is not None else resolve_device(cfg.device)
    ds = dataset if dataset is not None else load_dataset(cfg)
    model = build_model(cfg.model, cfg.seed).to(device)
    loss_fn = make_loss(cfg.loss)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), device)
    batches = Batches(ds.x.to(device), ds.y.to(device), cfg.data.batch_size, cfg.data.shuffle, cfg.seed)
    steps = resolved_steps(cfg, batches.per_epoch)
    scheduler = make_scheduler(cfg.scheduler, optimizer, steps)
    return Run(cfg, device, model, loss_fn, optimizer, ds, batches, steps, scheduler)


def describe_run(run: Run) -> dict:
    """What the start panel shows: plain data, rendered by report.py."""
    cfg, model = run.cfg, run.model
    act = cfg.model.activation.model_dump()
    loss = cfg.loss.model_dump()
    opt_spec = cfg.optimizer
    return {
        "model": {
            "sizes": [cfg.model.input_size, cfg.model.hidden_size, cfg.model.output_size],
            "activation": act.pop("name"),
            "activation_options": act,
            "bias": cfg.model.bias,
            "params": {n: list(p.shape) for n, p in model.named_parameters()},
            "parameter_count": sum(p.numel() for p in model.parameters()),
        },
        "loss": {"name": loss.pop("name"), "options": loss},
        "optimizer": {"name": opt_spec.name, "options": optimizer_hyperparams(opt_spec),
                      "implementation": implementation_name(run.optimizer)},
        "device": str(run.device),
        "data": {
            "source": run.dataset.source,
            "samples": run.dataset.samples,
            "batch_size": run.batches.batch_size,
            "batches_per_epoch": run.batches.per_epoch,
            "shuffle": run.batches.shuffle,
        },
        "steps": run.steps,
        "seed": cfg.seed,
        "scheduler": cfg.scheduler.model_dump(),
        "clip_grad_norm": cfg.train.clip_grad_norm,
        "on_nonfinite": cfg.train.on_nonfinite,
        "precision": cfg.precision,
        "compile": cfg.compile,
        "threads": torch.get_num_threads(),
    }
