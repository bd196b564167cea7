"""Values derived from a validated config: steps, logging interval, optimizer arguments and labels."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from backprop_cli.config.schema import Config

DEFAULT_STEPS = 100


def resolved_steps(cfg: Config, batches_per_epoch: int) -> int:
    """``train.steps``, else ``train.epochs`` × batches per epoch, else 100."""
    if cfg.train.steps is not None:
        return cfg.train.steps
    if cfg.train.epochs is not None:
        return cfg.train.epochs * batches_per_epoch
    return DEFAULT_STEPS


def flops_per_step(cfg: Config) -> float:
    """The work of one training step: 6 · batch · parameters (forward 2, backward 4 per weight and row)."""
    widths, bias = cfg.model.widths, cfg.model.bias
    params = sum((n_in + bias) * n_out for n_in, n_out in zip(widths, widths[1:]))
    return 6.0 * cfg.data.batch_size * params


def default_log_every(steps: int) -> int:
    """A round logging interval that prints about 20-50 rows."""
    for every in (1, 2, 5, 10, 20, 25, 50):
        if steps <= 50 * every:
            return every
    scale = 100
    while True:
        for m in (1, 2, 5):
            if steps <= 50 * m * scale:
                return m * scale
        scale *= 10


def optimizer_hyperparams(spec: BaseModel) -> dict[str, Any]:
    """The optimizer's keyword arguments (everything but its name)."""
    out = spec.model_dump(exclude={"name"})
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


def optimizer_label(spec: BaseModel) -> str:
    """A short display name: the optimizer, its lr, and every hyperparameter that is not torch's default."""
    parts = [spec.name]
    for key, field in type(spec).model_fields.items():
        if key == "name":
            continue
        value = getattr(spec, key)
        if key == "lr" or value != field.default:
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = "[" + ",".join(f"{v:g}" for v in value) + "]"
            else:
                text = f"{value:g}"
            parts.append(f"{key}={text}")
    return " ".join(parts)


def start_summary(cfg: Config) -> str:
    """One line about the run that needs no torch: shown while torch loads and the run is built."""
    m, d = cfg.model, cfg.data
    data = d.path if d.kind == "csv" else f"{d.samples} samples"
    count, unit = ((cfg.train.steps, "step") if cfg.train.steps is not None
                   else (cfg.train.epochs, "epoch") if cfg.train.epochs is not None else (DEFAULT_STEPS, "step"))
    steps = f"{count} {unit}{'s' if count != 1 else ''}"
    hidden = m.hidden_sizes if m.hidden_sizes is not None else [m.hidden_size]
    widths = [m.input_size or "auto", *hidden, m.output_size]  # input_size may still be auto: the data is read next
    return (f"{' → '.join(map(str, widths))} {m.activation.name} · {cfg.loss.name} · {optimizer_label(cfg.optimizer)}"
            f" · {data} · {steps}")


def optimizer_spec_text(spec: BaseModel, **changes: Any) -> str:
    """The ``--optimizer`` spelling of an optimizer (``sgd:lr=0.5,momentum=0.9``): its name, its lr and
    every hyperparameter that is not torch's default, with ``changes`` applied."""
    parts = []
    for key, field in type(spec).model_fields.items():
        if key == "name":
            continue
        value = changes.get(key, getattr(spec, key))
        if key == "lr" or value != field.default:
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                text = "[" + ",".join(f"{v:g}" for v in value) + "]"
            else:
                text = f"{value:g}"
            parts.append(f"{key}={text}")
    return f"{spec.name}:" + ",".join(parts) if parts else spec.name


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.plain(), sort_keys=False, default_flow_style=None)
