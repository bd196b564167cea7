"""One table per component kind: every configurable name → everything the tool does with it.

Adding an activation, a loss, an optimizer or a schedule is one model in ``config/schema.py`` and one
entry here; ``tests/test_components.py`` checks that every name in the schema has its entry.

Each activation and loss carries its hand-written backward beside its forward (micrograd's way):
``check-grads`` holds them against autograd and finite differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

Tensor = torch.Tensor

# --------------------------------------------------------------------------- activations

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def _gelu_tanh(z: Tensor) -> Tensor:
    return 0.5 * z * (1 + torch.tanh(SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3)))


def _gelu_tanh_grad(z: Tensor) -> Tensor:
    t = torch.tanh(SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * SQRT_2_OVER_PI * (1 + 3 * GELU_CUBIC * z**2)


def _gelu_erf(z: Tensor) -> Tensor:
    return 0.5 * z * (1 + torch.erf(z / math.sqrt(2.0)))


def _gelu_erf_grad(z: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


@dataclass(frozen=True)
class Activation:
    """``module(spec)``: the torch module; ``forward(z, opts)`` and ``derivative(z, a, opts)`` = da/dz by
    hand; ``gain``: its name for ``torch.nn.init.calculate_gain``; ``unit_check``: how a unit goes
    bad (``dead``: outputs 0 for every row; ``saturated``: stuck in a flat tail), or None; ``flat(a)``:
    elementwise, where an output ``a`` sits in that flat region (f′ ≈ 0), for ``train``'s diagnostics."""

    label: str
    module: Callable[[object], nn.Module]
    forward: Callable[[Tensor, dict], Tensor]
    derivative: Callable[[Tensor, Tensor, dict], Tensor]
    gain: str
    unit_check: Optional[str] = None
    flat: Optional[Callable[[Tensor], Tensor]] = None


DEAD_BELOW = 1e-3  # GELU: |a| ≤ 1e-3 means z ≲ −3.4, where |f′(z)| < 0.004
SATURATED_ABOVE = 0.97  # tanh: |a| > 0.97; sigmoid: a < 0.03 or a > 0.97


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(
        "ReLU", lambda s: nn.ReLU(),
        lambda z, o: torch.clamp(z, min=0),
        lambda z, a, o: (z > 0).to(z.dtype),  # torch's choice at 0: derivative 0
        "relu", "dead", lambda a: a == 0),
    "tanh": Activation(
        "Tanh", lambda s: nn.Tanh(),
        lambda z, o: torch.tanh(z),
        lambda z, a, o: 1 - a**2,
        "tanh", "saturated", lambda a: a.abs() > SATURATED_ABOVE),
    "sigmoid": Activation(
        "Sigmoid", lambda s: nn.Sigmoid(),
        lambda z, o: 1 / (1 + torch.exp(-z)),
        lambda z, a, o: a * (1 - a),
        "sigmoid", "saturated", lambda a: (a < 1 - SATURATED_ABOVE) | (a > SATURATED_ABOVE)),
    "gelu": Activation(
        "GELU", lambda s: nn.GELU(approximate=s.approximate),
        lambda z, o: _gelu_tanh(z) if o.get("approximate") == "tanh" else _gelu_erf(z),
        lambda z, a, o: _gelu_tanh_grad(z) if o.get("approximate") == "tanh" else _gelu_erf_grad(z),
        "relu", "dead", lambda a: a.abs() <= DEAD_BELOW),
    "leaky_relu": Activation(
        "LeakyReLU", lambda s: nn.LeakyReLU(negative_slope=s.negative_slope),
        lambda z, o: torch.where(z > 0, z, o["negative_slope"] * z),
        lambda z, a, o: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, o["negative_slope"])),
        "leaky_relu", None),
    "identity": Activation(
        "Identity", lambda s: nn.Identity(),
        lambda z, o: z,
        lambda z, a, o: torch.ones_like(z),
        "linear", None),
}

# --------------------------------------------------------------------------- normalization, dropout, skips
#
# Each hidden block is linear → norm → activation → dropout (+ skip): backprop_cli/core/model.py. The
# hand-written chain rule (core/grads.py) calls these backwards; check-grads holds them against autograd
# (torch's own nn.BatchNorm1d / nn.LayerNorm / dropout) and finite differences.

NORM_EPS = 1e-5  # torch's default eps for both BatchNorm1d and LayerNorm


def _normalize(z: Tensor, gamma: Tensor, beta: Tensor, dim: int) -> tuple[Tensor, tuple]:
    """y = γ·x̂ + β with x̂ = (z − μ)/√(σ² + eps), μ and σ² (biased) the mean and variance over ``dim``."""
    mu = z.mean(dim=dim, keepdim=True)
    var = ((z - mu) ** 2).mean(dim=dim, keepdim=True)
    inv = 1 / torch.sqrt(var + NORM_EPS)
    xhat = (z - mu) * inv
    return gamma * xhat + beta, (xhat, inv, gamma)


def _normalize_grad(dy: Tensor, cache: tuple, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dL/dz, dL/dγ, dL/dβ) of :func:`_normalize`, the full formula through μ and σ² (n values over ``dim``):

        dx̂ = dy·γ
        dz = (1/n)·inv·(n·dx̂ − Σ dx̂ − x̂·Σ(dx̂·x̂))        (sums over ``dim``)
        dγ = Σ_rows dy·x̂,  dβ = Σ_rows dy

    (the chain rule through x̂ = (z − μ)·inv, μ = mean z, inv = (σ² + eps)^−½, σ² = mean (z − μ)²:
    dσ² = Σ dx̂·(z − μ)·(−½)·inv³, dμ = −Σ dx̂·inv, dz = dx̂·inv + dσ²·2(z − μ)/n + dμ/n; simplified)."""
    xhat, inv, gamma = cache
    n = xhat.shape[dim]
    dxhat = dy * gamma
    dz = inv / n * (n * dxhat - dxhat.sum(dim=dim, keepdim=True)
                    - xhat * (dxhat * xhat).sum(dim=dim, keepdim=True))
    return dz, (dy * xhat).sum(dim=0), dy.sum(dim=0)


@dataclass(frozen=True)
class Norm:
    """``module(width)``: the torch module (parameters ``weight`` = γ and ``bias`` = β);
    ``forward(z, γ, β)`` → (y, cache) in training mode and ``backward(dy, cache)`` → (dz, dγ, dβ), by hand."""

    label: str
    module: Callable[[int], nn.Module]
    forward: Callable[[Tensor, Tensor, Tensor], tuple]
    backward: Callable[[Tensor, tuple], tuple]


NORMS: dict[str, Norm] = {
    # batch norm: each unit over the rows of the batch (training mode; eval mode uses the running mean
    # and variance, a fixed affine map)
    "batch": Norm(
        "BatchNorm1d", lambda width: nn.BatchNorm1d(width, eps=NORM_EPS),
        lambda z, g, b: _normalize(z, g, b, dim=0),
        lambda dy, cache: _normalize_grad(dy, cache, dim=0)),
    # layer norm: each row over its units (the same in training and eval)
    "layer": Norm(
        "LayerNorm", lambda width: nn.LayerNorm(width, eps=NORM_EPS),
        lambda z, g, b: _normalize(z, g, b, dim=1),
        lambda dy, cache: _normalize_grad(dy, cache, dim=1)),
}


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with a given keep-mask m (True: kept): ``forward(a, m, p)`` = a·m/(1−p) and
    ``backward(d, m, p)`` = d·m/(1−p), dL/da by hand. Training mode only; in eval mode it is the identity."""

    forward: Callable[[Tensor, Tensor, float], Tensor]
    backward: Callable[[Tensor, Tensor, float], Tensor]


DROPOUT = Dropout(
    lambda a, keep, p: a * keep.to(a.dtype) / (1 - p),
    lambda d, keep, p: d * keep.to(d.dtype) / (1 - p))


@dataclass(frozen=True)
class Residual:
    """The skip h = x + F(x): ``forward(x, fx)``; ``backward(dh)`` → (dL/dx by the skip, dL/dF(x)): the
    gradient reaches x along both paths, the skip's part added to the one through F."""

    forward: Callable[[Tensor, Tensor], Tensor]
    backward: Callable[[Tensor], tuple]


RESIDUAL = Residual(lambda x, fx: x + fx, lambda dh: (dh, dh))

# --------------------------------------------------------------------------- losses


def _mean_divisor(y_hat: Tensor, spec) -> float:
    """The divisor of a mean reduction over every element (1 for sum)."""
    return float(y_hat.numel()) if spec.reduction == "mean" else 1.0


def _smoothed_onehot(y: Tensor, classes: int, eps: float, dtype) -> Tensor:
    q = torch.nn.functional.one_hot(y, classes).to(dtype)
    return q * (1 - eps) + eps / classes


def _weights(values, like: Tensor) -> Optional[Tensor]:
    """A loss's resolved weights (a list of numbers, or one number) as a tensor beside ``like``; None unset.
    ``auto`` is resolved from the training rows before a loss is built (core.build.resolve_loss)."""
    if values is None:
        return None
    assert values != "auto", "auto weights are resolved from the training rows first"
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _cross_entropy_grad(yh: Tensor, y: Tensor, s) -> Tensor:
    """dL/dz of torch's CrossEntropyLoss: per row Σ_c w_c q_c (p − e_c) = (Σ_c w_c q_c)·p − w ⊙ q (q: the
    smoothed one-hot target, w: the class weights, all 1 without them); mean: over Σ_rows w_{y}."""
    target = _smoothed_onehot(y, yh.shape[1], s.label_smoothing, yh.dtype)
    p = torch.softmax(yh, dim=1)
    w = _weights(getattr(s, "class_weights", None), yh)
    if w is None:
        return (p - target) / (yh.shape[0] if s.reduction == "mean" else 1.0)
    wq = target * w
    grad = wq.sum(dim=1, keepdim=True) * p - wq
    return grad / (float(w[y].sum()) if s.reduction == "mean" else 1.0)


def _bce_grad(yh: Tensor, y: Tensor, s) -> Tensor:
    """dL/dz of torch's BCEWithLogitsLoss, −[P·y·log σ(z) + (1 − y)·log(1 − σ(z))]: σ(z)·(P·y + 1 − y) − P·y
    (P: pos_weight, 1 without it)."""
    pw = _weights(getattr(s, "pos_weight", None), yh)
    if pw is None:
        return (torch.sigmoid(yh) - y) / _mean_divisor(yh, s)
    return (torch.sigmoid(yh) * (pw * y + 1 - y) - pw * y) / _mean_divisor(yh, s)


def _cross_entropy_module(s) -> nn.Module:
    w = getattr(s, "class_weights", None)
    return nn.CrossEntropyLoss(reduction=s.reduction, label_smoothing=s.label_smoothing,
                               weight=None if w is None else _weights(w, torch.zeros(())))


def _bce_module(s) -> nn.Module:
    pw = getattr(s, "pos_weight", None)
    return nn.BCEWithLogitsLoss(reduction=s.reduction, pos_weight=None if pw is None else _weights(pw, torch.zeros(())))


@dataclass(frozen=True)
class Loss:
    """``module(spec)``: the torch loss; ``gradient(ŷ, y, spec)`` = dL/dŷ by hand. The task a loss
    defines (class labels, 0/1 targets or real values) is the config's: ``config.task_of``."""

    label: str
    module: Callable[[object], nn.Module]
    gradient: Callable[[Tensor, Tensor, object], Tensor]


LOSSES: dict[str, Loss] = {
    "mse": Loss(
        "MSELoss", lambda s: nn.MSELoss(reduction=s.reduction),
        lambda yh, y, s: 2 * (yh - y) / _mean_divisor(yh, s)),
    "l1": Loss(
        "L1Loss", lambda s: nn.L1Loss(reduction=s.reduction),
        lambda yh, y, s: torch.sign(yh - y) / _mean_divisor(yh, s)),
    "huber": Loss(
        "HuberLoss", lambda s: nn.HuberLoss(reduction=s.reduction, delta=s.delta),
        lambda yh, y, s: torch.clamp(yh - y, -s.delta, s.delta) / _mean_divisor(yh, s)),
    "smooth_l1": Loss(
        "SmoothL1Loss", lambda s: nn.SmoothL1Loss(reduction=s.reduction, beta=s.beta),
        lambda yh, y, s: (torch.sign(yh - y) if s.beta == 0 else torch.clamp((yh - y) / s.beta, -1, 1))
        / _mean_divisor(yh, s)),
    "cross_entropy": Loss("CrossEntropyLoss", _cross_entropy_module, _cross_entropy_grad),
    "bce_with_logits": Loss("BCEWithLogitsLoss", _bce_module, _bce_grad),
}

# --------------------------------------------------------------------------- optimizers

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

# --------------------------------------------------------------------------- learning-rate schedules


def _step(spec, optimizer, total_steps):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)


def _cosine(spec, optimizer, total_steps):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.T_max or total_steps,
                                                      eta_min=spec.eta_min)


def _warmup_cosine(spec, optimizer, total_steps):
    warmup = spec.warmup_steps
    length = spec.T_max or max(1, total_steps - warmup)
    floor = spec.eta_min / optimizer.param_groups[0]["lr"]

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = min(s - warmup, length) / length
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _one_cycle(spec, optimizer, total_steps):
    """torch's OneCycleLR over the run's steps; the momentum (or Adam's beta1) is left as configured."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.max_lr or optimizer.param_groups[0]["lr"], total_steps=total_steps,
        pct_start=spec.pct_start, anneal_strategy=spec.anneal_strategy, div_factor=spec.div_factor,
        final_div_factor=spec.final_div_factor, cycle_momentum=False)


class PlateauSchedule(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau (mode min) on val_loss, stepped by the run's regular evaluations (every
    ``train.eval_every`` steps; not the extra one at a run's last step, so that a run stopped anywhere and
    resumed follows the schedule of one straight through): ``patience`` and ``cooldown`` count them. The
    engine's ``step()`` after every optimizer step only counts the steps. Its whole state (best,
    num_bad_epochs, cooldown_counter, last_epoch, the step count) is its ``state_dict``, the checkpoint's
    ``scheduler``; ``--resume`` restores the :attr:`POSITION` attributes (runs.resume.SCHEDULE_POSITION)."""

    POSITION = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr", "_step_count")

    def __init__(self, optimizer, **options) -> None:
        super().__init__(optimizer, **options)
        self._step_count = 0  # optimizer steps taken

    def step(self, metrics=None, epoch=None) -> None:  # type: ignore[override]
        """The engine's call after an optimizer step (no metrics): counted; with a val_loss: torch's step."""
        if metrics is None:
            self._step_count += 1
        else:
            super().step(metrics)

    def evaluated(self, val_loss: float, every: int) -> None:
        """An evaluation's val_loss: a step of the schedule when it is a regular one (a multiple of ``every``)."""
        if self._step_count % every == 0:
            self.step(val_loss)

    def get_lr(self) -> list[float]:
        """No formula: the lr is where the reductions left it."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]


def _plateau(spec, optimizer, total_steps):
    return PlateauSchedule(optimizer, mode="min", factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr,
                           threshold=spec.threshold, threshold_mode="rel", cooldown=spec.cooldown)


# name → (spec, optimizer, total steps) → an LRScheduler stepped once per optimizer step, or None
# (reduce_on_plateau: a PlateauSchedule, stepped once per evaluation on val_loss)
SCHEDULERS: dict[str, Callable] = {
    "none": lambda spec, optimizer, total_steps: None,
    "step": _step,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "reduce_on_plateau": _plateau,
    "one_cycle": _one_cycle,
}
