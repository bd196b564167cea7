"""The chain rule of the configured network on one batch, layer by layer, beside autograd.

For ``explain --config``: the same forward and backward as :func:`backprop_cli.core.grads.manual_backward`,
but every intermediate kept (z_k, h_k, δ_k, dW_k, db_k) so a learner can follow δ from the loss back to
``layer1``; autograd's ``.grad`` of a float64 copy of the same net on the same batch is put beside each.

    forward:  h_0 = x;  z_k = h_{k-1}·W_kᵀ + b_k;  h_k = f(z_k)  (the last layer has no f: ŷ = z_N)
    backward: δ_N = dL/dŷ;  dW_k = δ_kᵀ·h_{k-1};  db_k = Σ_rows δ_k;  δ_{k-1} = (δ_k·W_k) ⊙ f′(z_{k-1})

Everything is computed in float64 on the CPU: the differences to autograd are then round-off (about 1e-16),
so a real mistake could not hide in them. Nothing here prints.
"""

from __future__ import annotations

import copy

import torch

from backprop_cli.core.components import ACTIVATIONS, LOSSES
from backprop_cli.errors import BackpropError


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def layerwise(model: torch.nn.Module, loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              activation, loss) -> dict:
    """Per layer, from the output layer (``layerN``) down to ``layer1`` (the order of the backward pass):
    its forward (``h_prev``, ``z``, ``h``), its ``delta``, the hand-written ``grad_weight``/``grad_bias``, and
    autograd's ``autograd_weight``/``autograd_bias`` with ``max_abs_diff`` (the largest of both).
    Also ``loss`` (float), ``y_hat``, ``dL_dy_hat`` and the loss of the float64 autograd copy."""
    act = ACTIVATIONS[activation.name]
    opts = activation.model_dump()
    layers = list(model.layers)
    depth = len(layers)
    x64 = x.detach().cpu().double()
    y64 = y.detach().cpu()
    y64 = y64 if y64.dtype == torch.int64 else y64.double()
    weights = [layer.weight.detach().cpu().double() for layer in layers]
    biases = [None if layer.bias is None else layer.bias.detach().cpu().double() for layer in layers]

    # --- by hand
    with torch.no_grad():
        hs, zs = [x64], []
        for k in range(depth):
            z = hs[-1] @ weights[k].T
            if biases[k] is not None:
                z = z + biases[k]
            zs.append(z)
            hs.append(act.forward(z, opts) if k < depth - 1 else z)
        y_hat = zs[-1]
        loss_value = float(loss_fn(y_hat, y64))
        delta = LOSSES[loss.name].gradient(y_hat, y64, loss)
        d_y_hat = delta
        out = []
        for k in range(depth - 1, -1, -1):
            grad_w = delta.T @ hs[k]
            grad_b = None if biases[k] is None else delta.sum(dim=0)
            derivative = None
            if k > 0:
                derivative = act.derivative(zs[k - 1], hs[k], opts)
            out.append({"name": f"layer{k + 1}", "index": k + 1, "h_prev": hs[k], "weight": weights[k],
                        "bias": biases[k], "z": zs[k], "h": hs[k + 1], "delta": delta,
                        "grad_weight": grad_w, "grad_bias": grad_b, "derivative_prev": derivative})
            if k > 0:
                delta = (delta @ weights[k]) * derivative
                out[-1]["delta_prev"] = delta

    # --- autograd, independently: a float64 copy of the same net, the torch loss, loss.backward()
    ref = copy.deepcopy(model).cpu().double()
    for p in ref.parameters():
        p.grad = None
    auto_loss = loss_fn(ref(x64), y64)
    auto_loss.backward()
    named = dict(ref.named_parameters())
    for entry in out:
        aw = named[f"{entry['name']}.weight"].grad
        ab = named[f"{entry['name']}.bias"].grad if entry["bias"] is not None else None
        entry["autograd_weight"], entry["autograd_bias"] = aw, ab
        diffs = [_max_abs(entry["grad_weight"], aw)]
        if ab is not None:
            diffs.append(_max_abs(entry["grad_bias"], ab))
        entry["max_abs_diff"] = max(diffs)
    return {"loss": loss_value, "autograd_loss": float(auto_loss.detach()), "y_hat": y_hat, "dL_dy_hat": d_y_hat,
            "x": x64, "y": y64, "layers": out}


def explain_network(run, batch: int = 0, sample: int = 0) -> dict:
    """:func:`layerwise` for batch ``batch`` of a built run's data order, with the row ``sample`` of it picked
    out for display. ``run`` is a :class:`backprop_cli.core.build.Run`."""
    x, y = run.batches(batch)
    rows = int(x.shape[0])
    if not 0 <= sample < rows:
        raise BackpropError(f"--sample: batch {batch} has {rows} rows, so the sample is 0 to {rows - 1} "
                            f"(got {sample})")
    cfg = run.cfg
    result = layerwise(run.model, run.loss_fn, x, y, cfg.model.activation, cfg.loss)
    result.update({"batch": batch, "sample": sample, "rows": rows, "activation": ACTIVATIONS[cfg.model.activation.name].label,
                   "activation_name": cfg.model.activation.name, "loss_name": cfg.loss.name,
                   "loss_label": LOSSES[cfg.loss.name].label, "reduction": getattr(cfg.loss, "reduction", "mean"),
                   "widths": list(cfg.model.widths)})
    return result


def plain(result: dict) -> dict:
    """The result as plain data (nested lists shaped like the tensors), for the renderer and the JSON
    document, which import no torch."""
    def lst(t):
        return None if t is None else t.tolist()

    layers = []
    for e in result["layers"]:
        shape = {"h_prev": list(e["h_prev"].shape), "weight": list(e["weight"].shape),
                 "bias": None if e["bias"] is None else list(e["bias"].shape), "z": list(e["z"].shape),
                 "h": list(e["h"].shape), "delta": list(e["delta"].shape)}
        row = {"name": e["name"], "index": e["index"], "shape": shape, "h_prev": lst(e["h_prev"]),
               "weight": lst(e["weight"]), "bias": lst(e["bias"]), "z": lst(e["z"]), "h": lst(e["h"]),
               "delta": lst(e["delta"]), "grad_weight": lst(e["grad_weight"]), "grad_bias": lst(e["grad_bias"]),
               "autograd_weight": lst(e["autograd_weight"]), "autograd_bias": lst(e["autograd_bias"]),
               "max_abs_diff": e["max_abs_diff"]}
        if "delta_prev" in e:
            row["delta_prev"] = lst(e["delta_prev"])
            row["derivative_prev"] = lst(e["derivative_prev"])
        layers.append(row)
    keep = ("loss", "autograd_loss", "batch", "sample", "rows", "activation", "activation_name", "loss_name",
            "loss_label", "reduction", "widths")
    doc = {k: result[k] for k in keep}
    doc.update({"y_hat": lst(result["y_hat"]), "dL_dy_hat": lst(result["dL_dy_hat"]), "y": lst(result["y"]),
                "layers": layers})
    return doc
