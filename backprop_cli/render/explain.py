"""explain's worked example. No torch.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks


def render_explain(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    i, f, c, a, u = r["inputs"], r["forward"], r["chain_rule"], r["autograd"], r["update"]
    x, y, w1, w2, lr = (fmt(i[k]) for k in ("x", "y", "w1", "w2", "lr"))
    intro = Text("x → (w1) → z1 → (w2) → ŷ = z2,  no bias, identity activation,  L = ½(y − ŷ)²\n"
                 f"x = {x},  y = {y},  w1 = {w1},  w2 = {w2},  η = {lr}")

    def table(title: str, cols: list[Col]) -> FitTable:
        return FitTable(title, cols, plain=plain, wide=wide)

    left = "left"
    fw = table("1. forward", [Col("quantity", align=left), Col("formula", align=left, drop=1),
                              Col("numbers", align=left), Col("value")])
    fw.add_row("z1", "w1·x", f"{w1}·{x}", fmt(f["z1"]))
    fw.add_row("ŷ = z2", "w2·z1", f"{w2}·{fmt(f['z1'])}", fmt(f["y_hat"]))
    fw.add_row("L", "½(y − ŷ)²", f"½({y} − {fmt(f['y_hat'])})²", fmt(f["loss"]))
    bw = table("2. backward (chain rule)", [Col("gradient", align=left), Col("chain rule", align=left, drop=2),
                                            Col("symbolic", align=left, drop=1), Col("numbers", align=left),
                                            Col("value")])
    yh = fmt(f["y_hat"])
    bw.add_row("∂L/∂ŷ", "", "−(y − ŷ)", f"−({y} − {yh})", fmt(r["dL_dy_hat"]))
    bw.add_row("∂L/∂w2", "∂L/∂ŷ · ∂ŷ/∂w2", "−(y − ŷ)·z1", f"−({y} − {yh})·{fmt(f['z1'])}", fmt(c["w2"]))
    bw.add_row("∂L/∂w1", "∂L/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1", "−(y − ŷ)·w2·x", f"−({y} − {yh})·{w2}·{x}", fmt(c["w1"]))
    ag = table("3. PyTorch autograd (loss.backward())", [Col("gradient", align=left), Col("chain rule"),
                                                          Col("autograd"), Col("difference")])
    for k in ("w1", "w2"):
        ag.add_row(f"∂L/∂{k}", fmt(c[k]), fmt(a[k]), fmt(a[k] - c[k]))
    up = table("4. SGD update  w ← w − η·∂L/∂w", [Col("weight", align=left), Col("before"), Col("− η·∂L/∂w"),
                                                   Col("after")])
    up.add_row("w1", w1, fmt(-i["lr"] * c["w1"]), fmt(u["w1"]))
    up.add_row("w2", w2, fmt(-i["lr"] * c["w2"]), fmt(u["w2"]))
    after = Text(f"loss {fmt(f['loss'])} → {fmt(u['loss_after'])} after one step")
    blocks = [intro, fw, bw, ag, up, after]
    if len(r["history"]) > 1:
        ht = table(f"{len(r['history'])} steps of SGD", [Col("step"), Col("loss"), Col("∂L/∂w1"), Col("∂L/∂w2"),
                                                         Col("w1"), Col("w2")])
        for h in r["history"]:
            ht.add_row(str(h["step"]), fmt(h["loss"]), fmt(h["grad_w1"]), fmt(h["grad_w2"]), fmt(h["w1"]), fmt(h["w2"]))
        blocks += [ht, Text(f"loss after {len(r['history'])} steps: {fmt(r['history'][-1]['loss_after'])}")]
    if r.get("diverged_at") is not None and not math.isfinite(f["loss"]):
        blocks.append(Text("the loss of these numbers is not finite: ŷ = w2·w1·x is past what a float holds"))
    elif r.get("diverged_at") is not None:
        blocks.append(Text(f"diverged at step {r['diverged_at']}: the updates grew past what a float holds; "
                           "η is too large for this example (lower --lr)"))
    print_blocks(console, blocks)
