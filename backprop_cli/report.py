"""All terminal rendering. Rich on a terminal; plain lines when output is piped or NO_COLOR is set.

This module formats what it is given and computes nothing.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Optional

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backprop_cli.engine import StepRecord, Summary


def plain_output(stream: Optional[IO] = None) -> bool:
    """Plain text (no ANSI, no boxes, no progress bars) unless writing to a colour terminal."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def make_console(stream: Optional[IO] = None) -> Console:
    stream = stream or sys.stdout
    plain = plain_output(stream)
    return Console(file=stream, highlight=False, no_color=plain, force_terminal=not plain,
                   emoji=False, soft_wrap=plain)


def fmt(v: float) -> str:
    """Five significant digits; scientific notation for tiny or huge magnitudes."""
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-3 or a >= 1e5:
        return f"{v:.3e}"
    return f"{v:.5g}"


def fmt_options(options: dict) -> str:
    parts = []
    for k, v in options.items():
        if isinstance(v, (list, tuple)):
            v = "(" + ", ".join(fmt(x) for x in v) + ")"
        elif isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float):
            v = fmt(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def error_line(message: str) -> str:
    return f"error: {message}"


def print_errors(messages: list[str], stream: Optional[IO] = None) -> None:
    stream = stream or sys.stderr
    for m in messages:
        print(error_line(m), file=stream)
    stream.flush()


# --------------------------------------------------------------------------- train


def _run_lines(info: dict) -> list[tuple[str, str]]:
    m = info["model"]
    sizes = " → ".join(str(s) for s in m["sizes"])
    act = m["activation"] + (f" ({fmt_options(m['activation_options'])})" if m["activation_options"] else "")
    shapes = ", ".join(f"{n} {list(s)}" for n, s in m["params"].items())
    d = info["data"]
    loss = info["loss"]
    opt = info["optimizer"]
    return [
        ("model", f"TwoLayerNet {sizes}, {act}, bias {'on' if m['bias'] else 'off'}"),
        ("parameters", f"{m['parameter_count']:,}: {shapes}"),
        ("loss", f"{loss['name']} ({fmt_options(loss['options'])})" if loss["options"] else loss["name"]),
        ("optimizer", f"{opt['name']} ({fmt_options(opt['options'])})"),
        ("device", info["device"]),
        ("data", f"{d['source']}, {d['samples']} samples, batch {d['batch_size']}, "
                 f"{d['batches_per_epoch']} batch(es)/epoch, shuffle {'on' if d['shuffle'] else 'off'}"),
        ("steps", f"{info['steps']} (seed {info['seed']})"),
    ]


class _Columns:
    """Fixed-width step rows: step, loss, grad_norm, one column per parameter, lr."""

    def __init__(self, names: list[str], total_steps: int):
        self.names = names
        self.step_w = max(4, len(str(total_steps)))
        self.widths = [max(10, len(n)) for n in names]

    def header(self) -> str:
        cells = [f"{'step':>{self.step_w}}", f"{'loss':>11}", f"{'grad_norm':>11}"]
        cells += [f"{n:>{w}}" for n, w in zip(self.names, self.widths)]
        cells.append(f"{'lr':>10}")
        return "  ".join(cells)

    def row(self, r: StepRecord) -> str:
        cells = [f"{r.step:>{self.step_w}}", f"{fmt(r.loss):>11}", f"{fmt(r.grad_norm):>11}"]
        cells += [f"{fmt(r.grad_norms.get(n, math.nan)):>{w}}" for n, w in zip(self.names, self.widths)]
        cells.append(f"{fmt(r.lr):>10}")
        return "  ".join(cells)


def _summary_lines(s: Summary, outputs: dict[str, str], interrupted: bool) -> list[tuple[str, str]]:
    rate = fmt(s.steps_per_s) if not math.isnan(s.steps_per_s) else "-"
    lines = [
        ("done" if not interrupted else "interrupted",
         f"{s.steps} step(s) in {s.wall_time:.3g} s ({rate} steps/s)"),
        ("loss", f"first {fmt(s.first_loss)}, last {fmt(s.last_loss)}, best {fmt(s.best_loss)} (step {s.best_step})"
         if s.steps else "no step completed"),
    ]
    for what, path in outputs.items():
        lines.append((what, f"wrote {path}"))
    return lines


class TrainReport:
    """Start panel, a row every ``log_every`` steps (plus the first and last), summary at the end."""

    def __init__(self, console: Console, *, plain: bool, quiet: bool = False):
        self.console, self.plain, self.quiet = console, plain, quiet
        self.progress = None
        self.task = None

    def start(self, info: dict, log_every: int) -> None:
        self.log_every = log_every
        self.total = info["steps"]
        self.cols = _Columns(list(info["model"]["params"]), self.total)
        if self.quiet:
            return
        lines = _run_lines(info) + [("log every", f"{log_every} step(s)")]
        if self.plain:
            for k, v in lines:
                self.console.print(f"{k + ':':<12}{v}", markup=False)
            self.console.print("", markup=False)
            self.console.print(self.cols.header(), markup=False)
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(Panel(grid, title="backprop train", title_align="left", expand=False))
            self.console.print(Text(self.cols.header(), style="bold"))
            if self.total > log_every:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), console=self.console, transient=True)
                self.task = self.progress.add_task("train", total=self.total)
                self.progress.start()

    def step(self, r: StepRecord) -> None:
        if self.quiet:
            return
        if r.step == 1 or r.step % self.log_every == 0 or r.step == self.total:
            line = self.cols.row(r)
            if self.plain:
                self.console.print(line, markup=False)
            else:
                self.console.print(Text(line))
        if self.progress is not None:
            self.progress.update(self.task, completed=r.step)

    def finish(self, summary: Summary, outputs: dict[str, str], interrupted: bool) -> None:
        if self.progress is not None:
            self.progress.stop()
        lines = _summary_lines(summary, outputs, interrupted)
        if self.plain:
            if not self.quiet:
                self.console.print("", markup=False)
            for k, v in lines:
                self.console.print(f"{k + ':':<12}{v}", markup=False)
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold green" if not interrupted else "bold yellow")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(grid)
