"""The network: a list of hidden blocks, then the last (linear) layer.

Depth is data, not code: ``model.hidden_size: 20`` is the classic two-layer net (``layer1``,
``layer2``), ``model.hidden_sizes: [64, 64, 64]`` four layers. Hidden block k is

    z_k = layerK(h_{k-1})        the linear layer (no bias under ``norm: batch``: see below)
    u_k = normK(z_k)             ``model.norm``: batch or layer normalization (or none: u_k = z_k)
    a_k = f(u_k)                 the activation; train's diagnostics measure a_k
    d_k = dropout(a_k)           ``model.dropout``: a_k·m/(1−p), m ~ Bernoulli(1−p), in training only
    h_k = h_{k−1} + d_k          ``model.residual``: where layer k's input and output widths match
          (else h_k = d_k)

and the output is ``layerN(h_{N−1})``. Parameters are ``layerK.weight/bias`` and ``normK.weight/bias``
(batch norm's running mean and variance are buffers of ``normK``, saved in checkpoints).

Under ``norm: batch`` the hidden linear layers have no bias: batch norm subtracts each unit's batch
mean, so a bias before it changes nothing and its gradient is exactly 0 (normK.bias, β, is the shift).
The skip is around the whole block, after dropout (the identity path carries h_{k−1} unchanged, so the
gradient reaching h_{k−1} is the block's plus the skip's). A block whose widths differ has no skip (no
projection is added: the tool's parameters stay the ones the config names).

The blocks are a list (:attr:`Net.blocks`): a module in front of them (an input encoding, say) fits
before the first one without touching them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from backprop_cli.core.components import ACTIVATIONS, DROPOUT, NORMS, RESIDUAL
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


@dataclass(frozen=True)
class Block:
    """Hidden block ``k`` (from 1): its linear layer, its norm (or None), its dropout, whether it has a skip."""

    k: int
    layer: nn.Linear
    norm: Optional[nn.Module]
    dropout: float
    residual: bool


class Net(nn.Module):
    """Linear layers ``layer1 … layerN``, with optional ``normK`` modules, one (stateless) activation,
    dropout and skip connections in the hidden blocks (see the module's docstring); with embedded category
    columns, an :class:`InputEncoding` named ``encoder`` in front of them."""

    def __init__(self, widths: list[int], activation: nn.Module | None = None, bias: bool = True,
                 norm: str = "none", dropout: Optional[list[float]] = None, residual: bool = False,
                 embeddings: list[tuple[int, int, int]] | None = None):
        super().__init__()
        self.widths = list(widths)
        self.encoder = InputEncoding(widths[0], embeddings) if embeddings else None
        widths = [self.encoder.width, *widths[1:]] if self.encoder is not None else self.widths  # layer1's input
        self.norm_name = norm
        hidden = len(widths) - 2
        dropout = list(dropout) if dropout is not None else [0.0] * hidden
        for k, (n_in, n_out) in enumerate(zip(widths, widths[1:]), start=1):
            last = k == len(widths) - 1
            setattr(self, f"layer{k}", nn.Linear(n_in, n_out, bias=bias and (last or norm != "batch")))
            if not last and norm != "none":
                setattr(self, f"norm{k}", NORMS[norm].module(n_out))
        self.activation = activation if activation is not None else nn.ReLU()
        # the same modules in order, looked up once (a tuple is no submodule: it changes no state_dict)
        self._layers = tuple(getattr(self, f"layer{k}") for k in range(1, len(self.widths)))
        self.blocks = tuple(Block(k, self._layers[k - 1], getattr(self, f"norm{k}", None), float(dropout[k - 1]),
                                  residual and widths[k - 1] == widths[k]) for k in range(1, hidden + 1))
        self._plain = all(b.norm is None and not b.dropout and not b.residual for b in self.blocks)

    @property
    def layers(self) -> list[nn.Linear]:
        return list(self._layers)

    @property
    def norms(self) -> list[nn.Module]:
        return [b.norm for b in self.blocks if b.norm is not None]

    def forward(self, x: torch.Tensor, keep_hidden: bool = False, masks: Optional[dict[int, torch.Tensor]] = None):
        """The output; with ``keep_hidden``, ``(output, [each hidden block's activation output a_k])``
        (train's diagnostics on logging steps: a flag, not a hook, so DDP and torch.compile pass it
        through). ``masks``: block k → a fixed boolean keep-mask for its dropout (check-grads and
        inspect-grads: the same mask in every pass), else dropout draws its own in training mode."""
        if self.encoder is not None:
            x = self.encoder(x)
        kept = []
        if self._plain:  # the classic net: no per-block branches
            for layer in self._layers[:-1]:
                x = self.activation(layer(x))
                if keep_hidden:
                    kept.append(x)
            return (self._layers[-1](x), kept) if keep_hidden else self._layers[-1](x)
        for b in self.blocks:
            z = b.layer(x)
            a = self.activation(b.norm(z) if b.norm is not None else z)
            if keep_hidden:
                kept.append(a)
            if b.dropout:
                if masks is not None and b.k in masks:
                    a = DROPOUT.forward(a, masks[b.k], b.dropout)
                else:
                    a = F.dropout(a, b.dropout, self.training)
            x = RESIDUAL.forward(x, a) if b.residual else a
        return (self._layers[-1](x), kept) if keep_hidden else self._layers[-1](x)


def dropout_masks(net: Net, rows: int, seed: int, index: int) -> dict[int, torch.Tensor]:
    """A fixed keep-mask per block with dropout, reproducible from (seed, batch index): what inspect-grads
    and check-grads use, so that autograd, the hand-written chain rule and finite differences all see the
    same one (True: the unit is kept). On the CPU, from a generator of its own (torch's global RNG untouched)."""
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % 2**63)
    return {b.k: torch.rand(rows, b.layer.out_features, generator=gen) >= b.dropout
            for b in net.blocks if b.dropout}


def net_of(cfg: ModelConfig, embeddings: list[tuple[int, int, int]] | None = None) -> Net:
    """The network a model section describes, with torch's default init (no seed: see build_model)."""
    entry = ACTIVATIONS[cfg.activation.name]
    return Net(cfg.widths, entry.module(cfg.activation), cfg.bias, cfg.norm, cfg.dropouts, cfg.residual, embeddings)


def parameter_count(widths: list[int], bias: bool, norm: str = "none") -> int:
    """Weights and biases of the linear layers, and the norm layers' γ and β."""
    last = len(widths) - 2
    count = sum((n_in + (bias and (i == last or norm != "batch"))) * n_out
                for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])))
    return count + (2 * sum(widths[1:-1]) if norm != "none" else 0)


def build_model(cfg: ModelConfig, seed: int, embeddings: list[tuple[int, int, int]] | None = None) -> Net:
    """Seeded init: ``torch.manual_seed(seed)``, then construction on the CPU (same weights on every
    device), then ``model.init`` (default: torch's own ``nn.Linear`` init). ``embeddings``: (input column,
    rows, width) of each embedded category column (data.encoding.Encoding.embeddings)."""
    widths = cfg.widths
    count = parameter_count(widths, cfg.bias, cfg.norm)
    if count > MAX_PARAMETERS:
        raise ResourceError(f"out of memory: the model would have {count:.3g} parameters "
                            f"({count * 4 / 2**40:,.0f} TiB); lower model.hidden_size, model.hidden_sizes or "
                            "model.input_size")
    torch.manual_seed(seed)
    net = net_of(cfg, embeddings)
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
