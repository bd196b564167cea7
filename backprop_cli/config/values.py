"""Values derived from a validated config: steps, logging interval, optimizer arguments and labels."""

from __future__ import annotations

import os
import platform
import sys
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


class _BlockDumper(yaml.SafeDumper):
    """Mappings in block style, one key per line; a short list of plain values in flow style
    ([0.9, 0.999]), a longer one an item per line (PyYAML's width is only where it starts to look
    for a break: a flow list of long names ran to 96 columns)."""


def _list_in_flow(dumper: yaml.SafeDumper, data: list):
    flow = all(not isinstance(v, (dict, list)) for v in data) and len(", ".join(map(str, data))) <= 50
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_BlockDumper.add_representer(list, _list_in_flow)


def to_yaml(cfg: Config, width: int = 78) -> str:
    """The config as `config show` prints it: block style, lines at most ``width`` wide where PyYAML can
    break them (between list items; never inside a word)."""
    return yaml.dump(cfg.plain(), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=width,
                     allow_unicode=True)


def device_problem(spec: str) -> str | None:
    """Whether the configured device exists, judged without torch: CUDA by the NVIDIA driver's device files,
    MPS by the platform (``auto`` always exists)."""
    if spec.startswith("cuda"):
        index = int(spec.partition(":")[2] or 0)
        gpus = os.path.isdir("/proc/driver/nvidia/gpus") and len(os.listdir("/proc/driver/nvidia/gpus"))
        if not gpus and not os.path.exists(f"/dev/nvidia{index}"):
            return f"device: {spec!r} is not available (no NVIDIA GPU found); use device: cpu or auto"
        if gpus and index >= gpus:
            return f"device: {spec!r} is not available (this machine has {gpus} CUDA device(s))"
    if spec == "mps" and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        return "device: 'mps' is not available (it needs an Apple silicon Mac); use device: cpu or auto"
    return None
