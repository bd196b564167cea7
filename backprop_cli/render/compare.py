"""compare-optimizers' table, sparklines and progress bars. No torch.
"""

from __future__ import annotations

import math
from typing import Optional

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from backprop_cli.render.console import UNLIMITED, fmt
from backprop_cli.render.fit import INDENT, Cell, Col, FitTable, print_blocks

SPARK = "▁▂▃▄▅▆▇█"

SPARK_WIDTH = 40

def _positive(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v) and v > 0]

def sparkline(values: list[float], width: int = SPARK_WIDTH, lo: Optional[float] = None,
              hi: Optional[float] = None) -> str:
    """A curve in block characters on a log scale (from ``lo`` to ``hi``), resampled to ``width`` columns."""
    vals = _positive(values)
    if not vals:
        return ""
    if len(vals) > width:
        step = len(vals) / width
        vals = [vals[min(len(vals) - 1, int(i * step))] for i in range(width)]
    logs = [math.log10(v) for v in vals]
    lo = min(logs) if lo is None else math.log10(lo)
    hi = max(logs) if hi is None else math.log10(hi)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in logs)

def _ms(entry: dict, key: str, seeds: int) -> str:
    m = entry[key]
    if m["mean"] is None:
        return "never" if key == "steps_to_10pct" else "-"
    if key == "steps_to_10pct":
        text = f"{m['mean']:.0f}" if seeds == 1 else f"{m['mean']:.1f} ± {m['std']:.1f}"
        if m.get("reached", seeds) < seeds:
            text += f" ({m['reached']}/{seeds})"
        return text
    return fmt(m["mean"]) if seeds == 1 else f"{fmt(m['mean'])} ± {fmt(m['std'])}"

COMPARE_KEYS = ["first_loss", "final_loss", "best_loss", "steps_to_10pct", "mean_grad_norm", "mean_update_ratio",
                "time_s", "steps_per_s"]

COMPARE_COLUMNS = {
    "first_loss": Col("first_loss", short="first", drop=4),
    "final_loss": Col("final_loss", short="final"),
    "best_loss": Col("best_loss", short="best"),
    "steps_to_10pct": Col("steps_to_10pct", short="to_10pct", drop=1),
    "mean_grad_norm": Col("mean_grad_norm", short="grad_norm", drop=3),
    "mean_update_ratio": Col("mean_update_ratio", short="upd_ratio", drop=2),
    "time_s": Col("time_s", short="time", drop=6),
    "steps_per_s": Col("steps_per_s", short="steps/s", drop=5),
}

VAL_COLUMNS = {  # with validation data, after the label: the ranking's key first
    "val_loss": Col("val_loss", short="val"),
    "best_val_loss": Col("best_val_loss", short="best_val", drop=3),
    "val_accuracy": Col("val_accuracy", short="val_acc"),
    "val_r2": Col("val_r2"),
}


def _val_keys(summary: list[dict]) -> list[str]:
    return [k for k in VAL_COLUMNS if summary and k in summary[0]]


def _early_notes(summary: list[dict], seeds: int) -> list[str]:
    """Which runs early stopping stopped, and whose numbers are their best evaluation's (restore_best)."""
    out = []
    for e in summary:
        for d in e.get("stopped_early") or []:
            seed = f" (seed {d['seed']})" if seeds > 1 else ""
            out.append(f"{e['label']}{seed}: stopped early at step {d['step']} (train.early_stopping).")
        for d in e.get("restored_best") or []:
            seed = f" (seed {d['seed']})" if seeds > 1 else ""
            out.append(f"{e['label']}{seed}: its val numbers are its best evaluation's, at step {d['step']} "
                       "(restore_best).")
    return out


def _status(entry: dict, seeds: int) -> str:
    if not entry.get("diverged"):
        return "done"
    if seeds == 1:
        return f"diverged at step {entry['diverged'][0]['step']}"
    return "diverged: " + ", ".join(f"seed {d['seed']} at step {d['step']}" for d in entry["diverged"])

def _divergence_notes(summary: list[dict], seeds: int) -> list[str]:
    out = []
    for e in summary:
        for d in e.get("diverged") or []:
            seed = f" (seed {d['seed']})" if seeds > 1 else ""
            cause = f" ({d['cause']})" if d.get("cause") else ""
            last = (f"; its numbers stop at its last finite loss, {fmt(d['last_finite_loss'])}"
                    if d.get("last_finite_loss") is not None else "")
            out.append(f"{e['label']}{seed} diverged at step {d['step']}{cause}{last}.")
        if e.get("diverged") and e.get("hint"):
            out.append(f"{e['label']}: {e['hint']}")
    return out

def sparklines(curves: dict[str, list[float]], width: Optional[int]) -> Text:
    """Each loss curve on one shared log scale; labels on their own line when the width is short."""
    every = [v for vals in curves.values() for v in _positive(vals)] or [1.0]
    lo, hi = min(every), max(every)
    label_w = max((cell_len(label) for label in curves), default=0)
    room = (width or UNLIMITED) - label_w - 2
    lines = [f"loss curves (log scale, shared: ▁ {fmt(lo)} … █ {fmt(hi)}):"]
    if room >= 20:
        for label, vals in curves.items():
            lines.append(f"{label:<{label_w}}  {sparkline(vals, min(SPARK_WIDTH, room), lo, hi)}".rstrip())
    else:
        room = max(10, (width or UNLIMITED) - len(INDENT))
        for label, vals in curves.items():
            lines += [label, INDENT + sparkline(vals, min(SPARK_WIDTH, room), lo, hi)]
    return Text("\n".join(lines))

def render_compare(console: Console, plain: bool, summary: list[dict], curves: dict[str, list[float]],
                   steps: int, quiet: bool = False, wide: bool = False, ranking: Optional[dict] = None) -> None:
    """The table (``rank``: by val_loss with validation data, else by final_loss, as the line under
    the table says), the sparklines, the notes."""
    seeds = len(summary[0]["seeds"]) if summary else 1
    diverged = any(e.get("diverged") for e in summary)
    val = _val_keys(summary)
    cols = [Col("label", align="left")] + ([Col("status", align="left")] if diverged else []) + [Col("rank")]
    cols += [VAL_COLUMNS[k] for k in val] + [COMPARE_COLUMNS[k] for k in COMPARE_KEYS]
    impl = summary[0].get("implementation") if summary else None
    kernel = f"{impl} optimizer implementation" if impl else "optimizer implementation"
    if seeds == 1:
        title = f"{steps} steps, same initial weights, batches and {kernel}"
    else:
        title = (f"{steps} steps, mean ± std over {seeds} seeds (each seed: one initialisation and data order "
                 f"for every optimizer), same {kernel}")
    notes = ([ranking["why"] + "."] if ranking else []) + _early_notes(summary, seeds) + _divergence_notes(summary, seeds)
    t = FitTable(title, cols, plain=plain, wide=wide, label=0, caption="\n".join(notes) or None)
    for e in summary:
        cells: list[Cell] = [e["label"]] + ([_status(e, seeds)] if diverged else [])
        cells.append(str(e["rank"]) if e.get("rank") else "-")
        for key in val + COMPARE_KEYS:
            text = _ms(e, key, seeds)
            if key in e["best_in"]:
                cells.append(Text(f"{text} *") if plain else Text(text, style="bold green"))
            else:
                cells.append(text)
        t.add_row(*cells)
    legend = Text(("* best in its column" if plain else "green: best in its column")
                  + " (time and steps/s only when the gap is beyond the spread of the seeds' runs). "
                  + "steps_to_10pct: first step with loss below 10% of the first; "
                  "mean_update_ratio: mean ‖Δw‖/‖w‖, how big each update really is, relative to the weights.",
                  style="" if plain else "dim")
    width = None if wide else console.width
    print_blocks(console, [t] if quiet else [t, sparklines(curves, width), legend])

class CompareProgress:
    """One progress bar per optimizer (terminal only); each shows its run's steps from the start."""

    show_progress = True

    def __init__(self, console: Console, labels: list[str], total: int, enabled: bool):
        self.progress = None
        if enabled and self.show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=console, transient=True)
            self.tasks = {label: self.progress.add_task(label, total=total) for label in labels}
            self.progress.start()

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.tasks[label], completed=done, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
