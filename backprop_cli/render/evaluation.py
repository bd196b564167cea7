"""The evaluation tables (per-class precision/recall/F1 and the confusion matrix), shown by train's
summary and by evaluate. No torch.
"""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.text import Text

from backprop_cli.core.records import ALL_METRICS
from backprop_cli.limits import MAX_SHOWN_CONFUSION
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
    if conf is not None and len(conf) > MAX_SHOWN_CONFUSION:
        blocks.append(Text(f"confusion matrix: {len(conf):,} × {len(conf):,} classes, more than the "
                           f"{MAX_SHOWN_CONFUSION} shown as a table; --format json has it whole"))
    elif conf is not None and len(conf):
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
    for key in ALL_METRICS:
        if key in r:
            t.add_row(key, fmt(r[key]))
    blocks = [head, t, *evaluation_tables(r, plain, wide)]
    if r.get("training_rows"):
        n, rows = r["training_rows"], r["rows"]
        blocks.insert(1, Text(f"note: {'all' if n == rows else f'{n} of the'} {rows} rows {'are' if n > 1 else 'is'} "
                              f"{'training rows' if n > 1 else 'a training row'} of the checkpoint's run (the same "
                              "feature values): these numbers are not held out"))
    print_blocks(console, blocks)
