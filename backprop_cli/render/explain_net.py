"""explain --config: the configured net's chain rule, layer by layer from the loss back. No torch here."""

from __future__ import annotations

import math

from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks

SHOWN = 6  # numbers of a vector shown before "…"

# dL/dŷ of each loss (reduction mean; the divisor is written out)
LOSS_GRADIENT = {
    "mse": "2(ŷ − y)/{n}",
    "l1": "sign(ŷ − y)/{n}",
    "huber": "clamp(ŷ − y, ±δ)/{n}",
    "smooth_l1": "clamp((ŷ − y)/β, ±1)/{n}",
    "cross_entropy": "(softmax(ŷ) − onehot(y))/{b}",
    "bce_with_logits": "(σ(ŷ) − y)/{n}",
}


def numbers(values, limit: int = SHOWN) -> str:
    """``[a, b, c]`` (whole when short), else the first ``limit`` and ``… (N values)``."""
    flat = list(_flatten(values))
    head = ", ".join(fmt(v) for v in flat[:limit])
    return f"[{head}]" if len(flat) <= limit else f"[{head}, …] ({len(flat)} values)"


def _flatten(values):
    if isinstance(values, (list, tuple)):
        for v in values:
            yield from _flatten(v)
    else:
        yield values


def _shape(s) -> str:
    return "[" + ", ".join(str(n) for n in s) + "]" if s is not None else "-"


def _norm(values) -> float:
    return math.sqrt(sum(v * v for v in _flatten(values)))


def render_explain_net(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    layers = r["layers"]  # output layer first
    depth = len(layers)
    i = r["sample"]
    act = r["activation"]
    widths = " → ".join(str(w) for w in r["widths"])
    n = r["rows"] * (len(r["y_hat"][0]) if r["y_hat"] and isinstance(r["y_hat"][0], list) else 1)
    grad_text = LOSS_GRADIENT.get(r["loss_name"], "dL/dŷ").format(n=n if r["reduction"] == "mean" else 1,
                                                                    b=r["rows"] if r["reduction"] == "mean" else 1)
    intro = Text(f"the configured net ({widths}, {act}, {r['loss_label']}) at its seeded init, on batch {r['batch']} "
                 f"({r['rows']} rows); the numbers are row {i} of each batch-sized array; float64.\n"
                 f"forward:  z_k = h_(k−1)·W_kᵀ + b_k,  h_k = {act}(z_k),  h_0 = x,  ŷ = z_{depth} (no activation "
                 f"after the last layer);  loss L = {fmt(r['loss'])}\n"
                 f"backward: δ_{depth} = dL/dŷ;  dW_k = δ_kᵀ·h_(k−1);  db_k = Σ_rows δ_k;  "
                 f"δ_(k−1) = (δ_k·W_k) ⊙ {act}′(z_(k−1))")
    blocks = [intro]
    for e in layers:
        k = e["index"]
        s = e["shape"]
        prev = "x" if k == 1 else f"h{k - 1}"
        out = k == depth
        t = FitTable(f"layer{k}" + (" (output layer)" if out else ""),
                     [Col("quantity", align="left"), Col("formula", align="left", drop=1), Col("shape", align="left"),
                      Col("numbers", align="left")], plain=plain, wide=wide)
        bias = f" + b{k}" if s["bias"] is not None else ""
        t.add_row(f"z{k}", f"{prev}·W{k}ᵀ{bias}", f"{_shape(s['h_prev'])}·{_shape(s['weight'][::-1])}",
                  f"row {i}: {numbers(e['z'][i])}")
        t.add_row("ŷ" if out else f"h{k}", f"z{k} (no activation)" if out else f"{act}(z{k})", _shape(s["h"]),
                  f"row {i}: {numbers(e['h'][i])}")
        if out:
            t.add_row("dL/dŷ", grad_text, _shape(s["delta"]), f"row {i}: {numbers(r['dL_dy_hat'][i])}")
        t.add_row(f"δ{k}", "dL/dŷ" if out else f"(δ{k + 1}·W{k + 1}) ⊙ {act}′(z{k})", _shape(s["delta"]),
                  f"row {i}: {numbers(e['delta'][i])}")
        t.add_row(f"dW{k}", f"δ{k}ᵀ·{prev}", _shape(s["weight"]), "first row: " + numbers(e["grad_weight"][0]))
        t.add_row("  autograd", f"layer{k}.weight.grad", _shape(s["weight"]), "first row: " + numbers(e["autograd_weight"][0]))
        if s["bias"] is not None:
            t.add_row(f"db{k}", f"Σ_rows δ{k}", _shape(s["bias"]), numbers(e["grad_bias"]))
            t.add_row("  autograd", f"layer{k}.bias.grad", _shape(s["bias"]), numbers(e["autograd_bias"]))
        blocks.append(t)
        blocks.append(Text(f"layer{k}: max |hand − autograd| = {fmt(e['max_abs_diff'])}" +
                           (f";  passes δ{k - 1} = (δ{k}·W{k}) ⊙ {act}′(z{k - 1}) down to layer{k - 1}"
                            if k > 1 else "")))
    summary = FitTable("summary: every layer's weight gradient, by hand and by autograd",
                       [Col("layer", align="left"), Col("‖dW‖ (hand)"), Col("‖grad‖ (autograd)"),
                        Col("max_abs_diff")], plain=plain, wide=wide)
    for e in layers:
        summary.add_row(e["name"], fmt(_norm(e["grad_weight"])), fmt(_norm(e["autograd_weight"])),
                        fmt(e["max_abs_diff"]))
    worst = max(e["max_abs_diff"] for e in layers)
    blocks += [summary, Text(f"largest difference {fmt(worst)}: float64 round-off; the chain rule above is what "
                             "loss.backward() computes")]
    print_blocks(console, blocks)
