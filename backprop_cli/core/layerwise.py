"""The chain rule of the configured network on one batch, block by block, beside autograd.

For ``explain --config``: the same forward and backward as :func:`backprop_cli.core.grads.manual_backward`,
but every intermediate kept so a learner can follow δ from the loss back to ``layer1``; autograd's
``.grad`` of a float64 copy of the same net on the same batch is put beside each gradient (the parameters'
``.grad``, and through ``retain_grad`` each linear layer's output gradient).

    forward, hidden block k (h_0 = x):  z_k = h_{k-1}·W_kᵀ + b_k,  u_k = norm(z_k) (or z_k),  a_k = f(u_k),
              d_k = a_k ⊙ m_k/(1−p) (dropout, or a_k),  h_k = h_{k-1} + d_k (skip) or d_k;  ŷ = z_N
    backward: δ_N = dL/dŷ;  dW_k = δ_kᵀ·h_{k-1};  db_k = Σ_rows δ_k;  δh_{k-1} = δ_k·W_k (+ δh_k: the skip)
              δa_k = δh_k ⊙ m_k/(1−p);  δu_k = δa_k ⊙ f′(u_k);  (δ_k, dγ_k, dβ_k) = norm′(δu_k)
    plain (no norm, dropout or skip): δ_{k-1} = (δ_k·W_k) ⊙ f′(z_{k-1})

The mode is training mode, the step ``train`` would run: batch norm normalizes with this batch's mean and
(biased) variance, and dropout uses a fixed keep-mask reproducible from (seed, batch index), the one
check-grads and inspect-grads use (:func:`backprop_cli.core.model.dropout_masks`). Everything is computed
in float64 on the CPU: the differences to autograd are then round-off (about 1e-16), so a real mistake
could not hide in them. Nothing here prints.
"""

from __future__ import annotations

import copy

import torch

from backprop_cli.core.components import ACTIVATIONS, DROPOUT, LOSSES, NORMS, NORM_EPS, RESIDUAL
from backprop_cli.core.model import dropout_masks
from backprop_cli.errors import BackpropError


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _hand(model, loss_fn, x64, y64, act, opts, loss, masks) -> tuple[list[dict], dict]:
    """The forward and the backward by hand, every intermediate kept; entries from the output layer down."""
    blocks = list(model.blocks)
    last = model.layers[-1]
    d64 = lambda t: None if t is None else t.detach().cpu().double()  # noqa: E731
    with torch.no_grad():
        h = x64
        fwd = []
        for b in blocks:
            w, bias = d64(b.layer.weight), d64(b.layer.bias)
            z = h @ w.T + (bias if bias is not None else 0)
            e = {"name": f"layer{b.k}", "index": b.k, "kind": "hidden", "h_prev": h, "weight": w, "bias": bias,
                 "z": z, "residual": b.residual}
            u = z
            if b.norm is not None:
                gamma, beta = d64(b.norm.weight), d64(b.norm.bias)
                u, cache = NORMS[model.norm_name].forward(z, gamma, beta)
                dim = 0 if model.norm_name == "batch" else 1
                mean = z.mean(dim=dim)
                var = ((z - z.mean(dim=dim, keepdim=True)) ** 2).mean(dim=dim)
                e["norm"] = {"name": f"norm{b.k}", "kind": model.norm_name, "over": "rows" if dim == 0 else "units",
                             "eps": NORM_EPS, "mean": mean, "var": var, "xhat": cache[0], "u": u,
                             "weight": gamma, "bias": beta, "cache": cache}
            a = act.forward(u, opts)
            e["a"] = a
            d = a
            if b.k in masks:
                keep = masks[b.k]
                d = DROPOUT.forward(a, keep, b.dropout)
                e["dropout"] = {"p": b.dropout, "mode": "fixed_mask", "keep": keep.to(torch.int64), "d": d}
            h = RESIDUAL.forward(h, d) if b.residual else d
            e["h"] = h
            fwd.append(e)
        w, bias = d64(last.weight), d64(last.bias)
        y_hat = h @ w.T + (bias if bias is not None else 0)
        k_out = len(blocks) + 1
        out = {"name": f"layer{k_out}", "index": k_out, "kind": "output", "h_prev": h, "weight": w, "bias": bias,
               "z": y_hat, "h": y_hat, "residual": False}
        loss_value = float(loss_fn(y_hat, y64))
        g = LOSSES[loss.name].gradient(y_hat, y64, loss)
        out.update(delta=g, grad_weight=g.T @ out["h_prev"], grad_bias=None if bias is None else g.sum(dim=0))
        entries = [out]
        dh = g @ w
        for e in reversed(fwd):
            e["delta_h"] = dh
            skip, dd = RESIDUAL.backward(dh) if e["residual"] else (None, dh)
            da = DROPOUT.backward(dd, masks[e["index"]], e["dropout"]["p"]) if "dropout" in e else dd
            e["delta_a"] = da
            n = e.get("norm")
            du = da * act.derivative(n["u"] if n else e["z"], e["a"], opts)
            dz = du
            if n is not None:
                n["delta_u"] = du
                dz, n["grad_weight"], n["grad_bias"] = NORMS[n["kind"]].backward(du, n["cache"])
            e["delta"] = dz
            e["grad_weight"] = dz.T @ e["h_prev"]
            e["grad_bias"] = None if e["bias"] is None else dz.sum(dim=0)
            dh = dz @ e["weight"]
            if skip is not None:
                dh = dh + skip
            entries.append(e)
    return entries, {"loss": loss_value, "y_hat": y_hat, "dL_dy_hat": g}


def _autograd(model, loss_fn, x64, y64, masks) -> tuple[float, dict, dict]:
    """Independently: a float64 copy of the net in training mode, the torch loss, ``loss.backward()``;
    the parameters' ``.grad`` and each linear layer's output gradient (``retain_grad``)."""
    ref = copy.deepcopy(model).cpu().double()
    ref.train()
    for p in ref.parameters():
        p.grad = None
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            outputs[name] = output
        return hook

    hooks = [layer.register_forward_hook(keep(f"layer{k}")) for k, layer in enumerate(ref.layers, start=1)]
    try:
        auto_loss = loss_fn(ref(x64, masks=masks), y64)
    finally:
        for hook in hooks:
            hook.remove()
    auto_loss.backward()
    return float(auto_loss.detach()), {n: p.grad for n, p in ref.named_parameters()}, \
        {n: t.grad for n, t in outputs.items()}


def layerwise(model: torch.nn.Module, loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              activation, loss, masks: dict | None = None) -> dict:
    """Per layer, from the output layer (``layerN``) down to ``layer1`` (the order of the backward pass):
    its forward (``h_prev``, ``z``, ``h``; hidden blocks also ``a`` and their ``norm``/``dropout`` parts), its
    ``delta`` (dL/dz_k), the hand-written ``grad_weight``/``grad_bias``, and autograd's
    ``autograd_weight``/``autograd_bias``/``autograd_delta`` with ``max_abs_diff`` (the largest difference of
    every gradient of the block, its norm's γ and β included). Also ``loss`` (float), ``y_hat``,
    ``dL_dy_hat`` and the loss of the float64 autograd copy. ``masks``: block k → its fixed keep-mask."""
    act = ACTIVATIONS[activation.name]
    opts = activation.model_dump()
    masks = {k: m.cpu() for k, m in (masks or {}).items()}
    x64 = x.detach().cpu().double()
    if getattr(model, "encoder", None) is not None:  # h_0: the encoded inputs (embedded columns' rows)
        with torch.no_grad():
            x64 = copy.deepcopy(model.encoder).cpu().double()(x64)
    y64 = y.detach().cpu()
    y64 = y64 if y64.dtype == torch.int64 else y64.double()
    entries, top = _hand(model, loss_fn, x64, y64, act, opts, loss, masks)
    auto_loss, grads, outputs = _autograd(model, loss_fn, x.detach().cpu().double(), y64, masks)
    for e in entries:
        e["autograd_weight"] = grads[f"{e['name']}.weight"]
        e["autograd_bias"] = grads[f"{e['name']}.bias"] if e["bias"] is not None else None
        e["autograd_delta"] = outputs[e["name"]]
        diffs = [_max_abs(e["grad_weight"], e["autograd_weight"]), _max_abs(e["delta"], e["autograd_delta"])]
        if e["bias"] is not None:
            diffs.append(_max_abs(e["grad_bias"], e["autograd_bias"]))
        n = e.get("norm")
        if n is not None:
            n["autograd_weight"], n["autograd_bias"] = grads[f"{n['name']}.weight"], grads[f"{n['name']}.bias"]
            n["max_abs_diff"] = max(_max_abs(n["grad_weight"], n["autograd_weight"]),
                                    _max_abs(n["grad_bias"], n["autograd_bias"]))
            diffs.append(n["max_abs_diff"])
        e["max_abs_diff"] = max(diffs)
    return {**top, "autograd_loss": auto_loss, "x": x64, "y": y64, "layers": entries}


def explain_network(run, batch: int = 0, sample: int = 0) -> dict:
    """:func:`layerwise` for batch ``batch`` of a built run's data order, with the row ``sample`` of it picked
    out for display. ``run`` is a :class:`backprop_cli.core.build.Run`."""
    x, y = run.batches(batch)
    rows = int(x.shape[0])
    if not 0 <= sample < rows:
        raise BackpropError(f"--sample: batch {batch} has {rows} rows, so the sample is 0 to {rows - 1} "
                            f"(got {sample})")
    cfg = run.cfg
    masks = dropout_masks(run.model, rows, cfg.seed, batch)
    result = layerwise(run.model, run.loss_fn, x, y, cfg.model.activation, cfg.loss, masks)
    result.update({"batch": batch, "sample": sample, "rows": rows, "activation": ACTIVATIONS[cfg.model.activation.name].label,
                   "activation_name": cfg.model.activation.name, "loss_name": cfg.loss.name,
                   "loss_label": LOSSES[cfg.loss.name].label, "reduction": getattr(cfg.loss, "reduction", "mean"),
                   "widths": list(cfg.model.widths), "norm": cfg.model.norm,
                   "plain": all(e.get("norm") is None and "dropout" not in e and not e["residual"]
                                for e in result["layers"])})
    return result


def _lst(t):
    return None if t is None else t.tolist()


def _shape(t):
    return None if t is None else list(t.shape)


def plain(result: dict) -> dict:
    """The result as plain data (nested lists shaped like the tensors), for the renderer and the JSON
    document, which import no torch."""
    layers = []
    for e in result["layers"]:
        shape = {"h_prev": _shape(e["h_prev"]), "weight": _shape(e["weight"]), "bias": _shape(e["bias"]),
                 "z": _shape(e["z"]), "h": _shape(e["h"]), "delta": _shape(e["delta"])}
        row = {"name": e["name"], "index": e["index"], "kind": e["kind"], "shape": shape}
        for key in ("h_prev", "weight", "bias", "z", "h", "delta", "grad_weight", "grad_bias", "autograd_weight",
                    "autograd_bias", "autograd_delta"):
            row[key] = _lst(e[key])
        row["max_abs_diff"] = e["max_abs_diff"]
        if e["kind"] == "hidden":
            row.update(a=_lst(e["a"]), delta_h=_lst(e["delta_h"]), delta_a=_lst(e["delta_a"]), residual=e["residual"])
            n = e.get("norm")
            row["norm"] = None if n is None else {
                "name": n["name"], "kind": n["kind"], "over": n["over"], "eps": n["eps"],
                **{k: _lst(n[k]) for k in ("mean", "var", "xhat", "u", "weight", "bias", "delta_u", "grad_weight",
                                           "grad_bias", "autograd_weight", "autograd_bias")},
                "max_abs_diff": n["max_abs_diff"]}
            dr = e.get("dropout")
            row["dropout"] = None if dr is None else {"p": dr["p"], "mode": dr["mode"], "keep": _lst(dr["keep"]),
                                                      "d": _lst(dr["d"])}
        layers.append(row)
    keep = ("loss", "autograd_loss", "batch", "sample", "rows", "activation", "activation_name", "loss_name",
            "loss_label", "reduction", "widths", "norm", "plain")
    doc = {k: result[k] for k in keep}
    doc.update({"y_hat": _lst(result["y_hat"]), "dL_dy_hat": _lst(result["dL_dy_hat"]), "y": _lst(result["y"]),
                "layers": layers})
    return doc
