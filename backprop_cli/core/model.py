"""The network: ``layer1 → activation → layer2 → activation → … → layerN``.

Depth is data, not code: ``model.hidden_size: 20`` is the classic two-layer net (``layer1``,
``layer2``), ``model.hidden_sizes: [64, 64, 64]`` four layers. Every hidden layer is followed by the
activation; the last layer is linear.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from backprop_cli.core.components import ACTIVATIONS
from backprop_cli.config import ModelConfig
from backprop_cli.errors import ResourceError

MAX_PARAMETERS = 2**60  # far above any memory; within torch's int64 size arithmetic (bytes < 2^63)


class InputEncoding(nn.Module):
    """Embedded category columns in front of the layers (``data.columns.NAME.encoding: embedding``): input
    column ``c`` holds a category index (0 is ``<unknown>``) that picks a learnt row of an ``nn.Embedding``;
    the other inputs pass as they are. Output: the passed inputs, then each embedding, concatenated."""

    def __init__(self, n_inputs: int, embeddings: list[tuple[int, int, int]]):
        super().__init__()
        embedded = [c for c, _, _ in embeddings]
        self.cols = tuple(embedded)
        self.register_buffer("keep", torch.tensor([i for i in range(n_inputs) if i not in embedded],
                                                  dtype=torch.int64), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(rows, width) for _, rows, width in embeddings)
        self.width = len(self.keep) + sum(width for _, _, width in embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.keep)]
        parts += [table(x[:, c].long()).to(x.dtype) for c, table in zip(self.cols, self.tables)]
        return torch.cat(parts, dim=1)


class Net(nn.Module):
    """Linear layers named ``layer1 … layerN`` with one (stateless) activation between them (and, with
    embedded category columns, an :class:`InputEncoding` named ``encoder`` in front)."""

    def __init__(self, widths: list[int], activation: nn.Module | None = None, bias: bool = True,
                 embeddings: list[tuple[int, int, int]] | None = None):
        super().__init__()
        self.widths = list(widths)
        self.encoder = InputEncoding(widths[0], embeddings) if embeddings else None
        layer_widths = [self.encoder.width, *widths[1:]] if self.encoder is not None else widths
        for k, (n_in, n_out) in enumerate(zip(layer_widths, layer_widths[1:]), start=1):
            setattr(self, f"layer{k}", nn.Linear(n_in, n_out, bias=bias))
        self.activation = activation if activation is not None else nn.ReLU()
        # the same modules in order, looked up once (a tuple is no submodule: it changes no state_dict)
        self._layers = tuple(getattr(self, f"layer{k}") for k in range(1, len(self.widths)))

    @property
    def layers(self) -> list[nn.Linear]:
        return list(self._layers)

    def forward(self, x: torch.Tensor, keep_hidden: bool = False):
        """The output; with ``keep_hidden``, ``(output, [each hidden layer's activation output])`` (train's
        diagnostics on logging steps: a flag, not a hook, so DDP and torch.compile pass it through)."""
        *hidden, last = self._layers
        if self.encoder is not None:
            x = self.encoder(x)
        kept = []
        for layer in hidden:
            x = self.activation(layer(x))
            if keep_hidden:
                kept.append(x)
        return (last(x), kept) if keep_hidden else last(x)


def parameter_count(widths: list[int], bias: bool) -> int:
    return sum((n_in + bias) * n_out for n_in, n_out in zip(widths, widths[1:]))


def build_model(cfg: ModelConfig, seed: int, embeddings: list[tuple[int, int, int]] | None = None) -> Net:
    """Seeded init: ``torch.manual_seed(seed)``, then construction on the CPU (same weights on every
    device), then ``model.init`` (default: torch's own ``nn.Linear`` init). ``embeddings``: (input column,
    rows, width) of each embedded category column (data.encoding.Encoding.embeddings)."""
    widths = cfg.widths
    count = parameter_count(widths, cfg.bias)
    if count > MAX_PARAMETERS:
        raise ResourceError(f"out of memory: the model would have {count:.3g} parameters "
                            f"({count * 4 / 2**40:,.0f} TiB); lower model.hidden_size, model.hidden_sizes or "
                            "model.input_size")
    entry = ACTIVATIONS[cfg.activation.name]
    torch.manual_seed(seed)
    net = Net(widths, entry.module(cfg.activation), cfg.bias, embeddings)
    if cfg.init != "default":
        initialize(net, cfg)
    return net


def initial_gain(cfg: ModelConfig) -> float:
    """``model.init_gain``, else torch's recommended gain for the activation."""
    if cfg.init_gain is not None:
        return cfg.init_gain
    entry = ACTIVATIONS[cfg.activation.name]
    slope = getattr(cfg.activation, "negative_slope", None)
    return nn.init.calculate_gain(entry.gain, slope) if entry.gain == "leaky_relu" else nn.init.calculate_gain(entry.gain)


def initialize(net: Net, cfg: ModelConfig) -> None:
    """``xavier``: uniform, bound gain·√(6/(fan_in+fan_out)); ``kaiming``: normal, std gain/√fan_in.
    Hidden layers take the activation's gain, the last (linear) layer gain 1; biases start at 0."""
    gain = initial_gain(cfg)
    layers = net.layers
    with torch.no_grad():
        for i, layer in enumerate(layers):
            g = gain if i < len(layers) - 1 else 1.0
            fan_out, fan_in = layer.weight.shape
            if cfg.init == "xavier":
                bound = g * math.sqrt(6.0 / (fan_in + fan_out))
                layer.weight.uniform_(-bound, bound)
            else:
                layer.weight.normal_(0.0, g / math.sqrt(fan_in))
            if layer.bias is not None:
                layer.bias.zero_()
