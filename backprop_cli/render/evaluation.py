"""The evaluation tables (per-class precision/recall/F1 and the confusion matrix), shown by train's
summary and by evaluate. No torch.
"""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import fmt
from backprop_cli.render.fit import Col, FitTable, print_blocks


def evaluation_tables(detail: Optional[dict], plain: bool, wide: bool = False) -> list:
    """Per-class precision, recall, F1 and support, and the confusion matrix (classification)."""
    if not detail or not detail.get("per_class"):
        return []
    t = FitTable("validation rows, per class", [Col("class", align="left"), Col("precision"), Col("recall"),
                                                Col("f1"), Col("support")], plain=plain, wide=wide, label=0)
    for row in detail["per_class"]:
        t.add_row(row["class"], fmt(row["precision"]), fmt(row["recall"]), fmt(row["f1"]), str(row["support"]))
    blocks: list = [t]
    conf = detail.get("confusion")
    if conf:
        names = detail["classes"]
        c = FitTable("confusion matrix", [Col("true \\ predicted", align="left")] + [Col(n) for n in names],
                     plain=plain, wide=wide, label=0)
        for name, row in zip(names, conf):
            c.add_row(name, *(str(v) for v in row))
        blocks.append(c)
    return blocks

def render_evaluate(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    head = Text(f"{r['checkpoint']} (step {r['step']}) on {r['data']}: {r['rows']} rows")
    t = FitTable("", [Col("metric", align="left"), Col("value")], plain=plain, wide=wide)
    t.add_row("loss", fmt(r["loss"]))
    for key in ("accuracy", "mae", "r2"):
        if key in r:
            t.add_row(key, fmt(r[key]))
    print_blocks(console, [head, t, *evaluation_tables(r, plain, wide)])
