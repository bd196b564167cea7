"""TwoLayerNet: layer1 → activation → layer2, named as in the classic example."""

from __future__ import annotations

import torch
from torch import nn

from backprop_cli.config import ModelConfig


def make_activation(spec) -> nn.Module:
    """The torch module for an activation spec (torch's own defaults)."""
    name = spec.name
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "gelu":
        return nn.GELU(approximate=spec.approximate)
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=spec.negative_slope)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


class TwoLayerNet(nn.Module):
    """``layer2(activation(layer1(x)))``; parameters ``layer1.weight``, ``layer1.bias``, ``layer2.*``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 activation: nn.Module | None = None, bias: bool = True):
        super().__init__()
        self.layer1 = nn.Linear(input_size, hidden_size, bias=bias)
        self.activation = activation if activation is not None else nn.ReLU()
        self.layer2 = nn.Linear(hidden_size, output_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.activation(self.layer1(x)))


def build_model(cfg: ModelConfig, seed: int) -> TwoLayerNet:
    """Seeded init: ``torch.manual_seed(seed)`` then construction on the CPU (same weights on every device)."""
    torch.manual_seed(seed)
    return TwoLayerNet(cfg.input_size, cfg.hidden_size, cfg.output_size,
                       make_activation(cfg.activation), cfg.bias)
