"""All terminal rendering. Rich on a terminal; plain lines when output is piped or NO_COLOR is set.

This module formats what it is given and computes nothing; it imports no torch.

How to render a table that fits
===============================

Every table fits the width it is printed in (a terminal's columns, ``COLUMNS`` for plain output, or
no limit for plain output without ``COLUMNS``) and never cuts a number or a name. Do not build a rich
``Table`` for results; describe the columns and hand over the rows::

    t = FitTable("gradients", [Col("parameter", align="left"), Col("norm"),
                               Col("zero_fraction", short="zeros", drop=1), Col("std", drop=2)],
                 plain=plain, wide=wide, label=0)
    t.add_row("layer1.weight", fmt(0.43), fmt(0.25), fmt(0.01))
    print_blocks(console, [Text("heading"), t, Text("notes")])

- ``Col.name`` is the header and the name of the same number in ``--format json`` and metrics files.
  ``Col.short`` is its abbreviation, used (for every column at once) only when the full headers do
  not fit; a note under the table spells out those that are not part of the name (``upd_ratio =
  mean_update_ratio``). List new abbreviations in the README ("Output conventions").
- ``Col.drop``: 0 = always shown. When the table is still too wide, whole columns are hidden, the
  highest ``drop`` first (ties: the rightmost first), and a note under the table names them and says
  how to see them (``--wide``, ``--format json``). Give 0 to the numbers the command exists to show.
- ``label=i``: column ``i`` (a long name, e.g. an optimizer label) may move onto its own line above
  its row before any column is hidden.
- When even the always-shown columns do not fit, each row is stacked: its label, then ``name value``
  pairs wrapped to the width. Nothing is ever cut.
- Cells are strings (numbers through :func:`fmt`) or rich ``Text`` (colour); widths are measured.
- ``wide=True`` (the ``--wide`` option every table command takes) shows every column at its natural
  width, however wide.
- Rows that arrive one at a time (train's step rows): :func:`fit` a :class:`Layout` once from the
  widest value each column can hold (``Col.width``), print ``layout.header()``, then
  ``layout.row(cells)`` per row (see :class:`TrainReport`).
- Prose (headings, notes, warnings) is a ``Text``: rich wraps it at spaces.
- tests/test_width.py renders every command at 60, 80, 100 and 150 columns: add a new command there.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Optional, Sequence, Union

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from backprop_cli.render.documents import json_text, train_document
from backprop_cli.errors import OutputClosed
from backprop_cli.core.records import StepRecord, Summary, is_logging_step
from backprop_cli.io.signals import on_interrupt

UNLIMITED = 100_000  # the width of plain output without COLUMNS: tables never fold
PLAIN_WIDTH = UNLIMITED  # the older name
NUM_WIDTH = 10  # the widest fmt() of a float32 value: "-1.234e-05"
GAP = "  "  # between columns
INDENT = "  "  # rows under a label on its own line; stacked rows
HIDDEN_HINT = "--wide shows every column, --format json every number"


def plain_output(stream: Optional[IO] = None) -> bool:
    """Plain text (no ANSI, no boxes, no progress bars) unless writing to a colour terminal."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def plain_width() -> int:
    """The width of plain output: ``COLUMNS`` when it is set (at least 20), else no limit."""
    text = os.environ.get("COLUMNS", "").strip()
    if text.isdigit() and int(text) >= 20:
        return int(text)
    return UNLIMITED


class _Console(Console):
    """A console that turns a closed output (``backprop ... | head``) into :class:`OutputClosed`."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise OutputClosed()


def make_console(stream: Optional[IO] = None) -> Console:
    stream = stream or sys.stdout
    plain = plain_output(stream)
    return _Console(file=stream, highlight=False, no_color=plain, force_terminal=not plain,
                    emoji=False, width=plain_width() if plain else None)


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


# --------------------------------------------------------------------------- tables that fit

Cell = Union[str, Text]


@dataclass(frozen=True)
class Col:
    """One column: see "How to render a table that fits" at the top of this module."""

    name: str  # the header: the name of the same number in --format json and metrics files
    short: Optional[str] = None  # the documented abbreviation, used when the full headers do not fit
    align: str = "right"  # right (numbers) or left (names, text)
    drop: int = 0  # 0: always shown; the highest are hidden first when the table does not fit
    width: int = 0  # the widest value the column may hold (rows printed one at a time)

    def header(self, short: bool) -> str:
        return (self.short or self.name) if short else self.name


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _text(cell: Cell) -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(str(cell))


def _fold(text: Text, limit: int) -> list[Text]:
    """``text`` in pieces of at most ``limit`` characters (only what no layout can fit is folded)."""
    if limit <= 0 or len(text.plain) <= limit:
        return [text]
    return list(text.divide(range(limit, len(text.plain), limit)))


def _pad(cell: Cell, width: int, align: str) -> Text:
    text = _text(cell)
    room = " " * max(0, width - cell_len(text.plain))
    return Text(room) + text if align == "right" else text + Text(room)


@dataclass
class Layout:
    """Which columns a table shows, with which headers and widths, and how each row is laid out."""

    cols: list[Col]
    shown: list[int]  # indices into cols, in order
    widths: dict[int, int]  # column index → width
    short: bool  # abbreviated headers
    label: Optional[int] = None  # the column printed on its own line above each row (None: in the row)
    stacked: bool = False  # each row as its label, then "name value" pairs
    limit: Optional[int] = None  # the width it fits (None: no limit)
    plain: bool = True

    @property
    def hidden(self) -> list[Col]:
        return [c for i, c in enumerate(self.cols) if i not in self.shown]

    @property
    def _inline(self) -> list[int]:
        return [i for i in self.shown if i != self.label]

    @property
    def width(self) -> int:
        """The longest line of the header and the rows."""
        inline = self._inline
        body = sum(self.widths[i] for i in inline) + len(GAP) * max(0, len(inline) - 1)
        if self.label is None:
            return body
        return max(self.widths[self.label], len(INDENT) + body)

    def _join(self, cells: dict[int, Cell]) -> Text:
        inline = self._inline
        line = Text(INDENT if self.label is not None else "")
        for k, i in enumerate(inline):
            if k:
                line.append(GAP)
            line.append_text(_pad(cells.get(i, ""), self.widths[i], self.cols[i].align))
        line.rstrip()
        return line

    def header(self) -> list[Text]:
        """The header line (and on a terminal the rule under it); nothing when rows are stacked."""
        if self.stacked:
            return []
        line = self._join({i: self.cols[i].header(self.short) for i in self.shown})
        if self.plain:
            return [line]
        line.stylize("bold")
        return [line, Text("━" * self.width, style="dim")]

    def row(self, cells: Sequence[Cell]) -> list[Text]:
        """One row (the cells of every column, in order) as the lines it takes."""
        if self.stacked:
            return self._stacked(cells)
        by_index = dict(enumerate(cells))
        lines = []
        if self.label is not None:
            lines.append(_text(by_index[self.label]).copy())
            if not self.plain:
                lines[0].stylize("bold")
        lines.append(self._join(by_index))
        return lines

    def _stacked(self, cells: Sequence[Cell]) -> list[Text]:
        first = self.label if self.label is not None else 0
        limit = self.limit or UNLIMITED
        lines = _fold(_text(cells[first]), limit)  # a label longer than the width: folded, never cut
        if not self.plain:
            for line in lines:
                line.stylize("bold")
        current = Text(INDENT)
        for i, col in enumerate(self.cols):
            if i == first or not _plain(cells[i]):
                continue
            name = Text(col.name, style="" if self.plain else "dim")
            pair = name + Text(" ") + _text(cells[i])
            if len(INDENT) + cell_len(pair.plain) > limit:  # name and value on lines of their own
                if cell_len(current.plain) > len(INDENT):
                    lines.append(current)
                    current = Text(INDENT)
                lines += _fold(Text(INDENT) + name, limit) + _fold(Text(INDENT) + _text(cells[i]), limit)
                continue
            if cell_len(current.plain) > len(INDENT) and cell_len(current.plain) + 3 + cell_len(pair.plain) > limit:
                lines.append(current)
                current = Text(INDENT)
            if cell_len(current.plain) > len(INDENT):
                current.append("   ")
            current.append_text(pair)
        if cell_len(current.plain) > len(INDENT):
            lines.append(current)
        return lines

    def note(self, hint: str = HIDDEN_HINT, legend: Optional[str] = None) -> Optional[str]:
        """What the reader must know about this layout: the abbreviations and the hidden columns."""
        parts = []
        if self.short and not self.stacked:
            abbreviations = legend or ", ".join(f"{self.cols[i].short} = {self.cols[i].name}" for i in self.shown
                                                if self.cols[i].short and self.cols[i].short not in self.cols[i].name)
            if abbreviations:
                parts.append(abbreviations)
        if self.hidden:
            parts.append(f"not shown at this width: {', '.join(c.name for c in self.hidden)} ({hint})")
        return "; ".join(parts) or None


def fit(cols: Sequence[Col], rows: Sequence[Sequence[Cell]], width: Optional[int], *, label: Optional[int] = None,
        plain: bool = True) -> Layout:
    """The most complete layout of these rows that fits ``width`` (None: no limit), tried in order:
    every column with full headers, then abbreviated headers, then the label on its own line; then
    the same with the highest-``drop`` column hidden, and so on; last, stacked rows."""
    cols = list(cols)

    def measure(i: int, short: bool) -> int:
        return max([cell_len(cols[i].header(short)), cols[i].width] + [cell_len(_plain(r[i])) for r in rows])

    order = sorted((i for i, c in enumerate(cols) if c.drop > 0), key=lambda i: (-cols[i].drop, -i))
    for n in range(len(order) + 1):
        shown = [i for i in range(len(cols)) if i not in order[:n]]
        for short, own_line in ((False, False), (True, False), (False, True), (True, True)):
            if own_line and (label is None or label not in shown):
                continue
            layout = Layout(cols, shown, {i: measure(i, short) for i in shown}, short,
                            label if own_line else None, limit=width, plain=plain)
            if width is None or layout.width <= width:
                return layout
    every = list(range(len(cols)))
    return Layout(cols, every, {i: measure(i, False) for i in every}, False, label, stacked=True, limit=width,
                  plain=plain)


def _render_line(console: Console, line: Text) -> Iterator[Segment]:
    yield from line.render(console)
    yield Segment.line()


def _render_prose(console: Console, text: Text, width: int) -> Iterator[Segment]:
    for line in text.wrap(console, max(1, width)):
        line.rstrip()
        yield from _render_line(console, line)


class FitTable:
    """A table that fits the width it is printed in (see the top of this module)."""

    def __init__(self, title: str, columns: Sequence[Col], *, plain: bool, wide: bool = False,
                 label: Optional[int] = None, caption: Optional[str] = None, hint: str = HIDDEN_HINT,
                 legend: Optional[str] = None):
        self.title, self.columns, self.plain, self.wide = title, list(columns), plain, wide
        self.label, self.caption, self.hint, self.legend = label, caption, hint, legend
        self.rows: list[list[Cell]] = []

    def add_row(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def layout(self, width: Optional[int]) -> Layout:
        return fit(self.columns, self.rows, None if self.wide else width, label=self.label, plain=self.plain)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        layout = self.layout(width)
        if self.title:
            yield from _render_prose(console, Text(self.title, style="" if self.plain else "bold"), width)
        for line in layout.header():
            yield from _render_line(console, line)
        for row in self.rows:
            for line in layout.row(row):
                yield from _render_line(console, line)
        for extra in (self.caption, layout.note(self.hint, self.legend)):
            if extra:
                yield from _render_prose(console, Text(extra, style="" if self.plain else "dim"), width)


def _table(title: str, columns: list[tuple[str, str]], plain: bool, wide: bool = False) -> FitTable:
    """The older spelling: ``(name, justify)`` pairs, every column always shown (stacked when too wide)."""
    return FitTable(title, [Col(name, align=justify) for name, justify in columns], plain=plain, wide=wide)


class Prose:
    """Text wrapped at spaces to the width, with no trailing spaces (plain output stays clean)."""

    def __init__(self, text: Text):
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from _render_prose(console, self.text, options.max_width)


def print_blocks(console: Console, blocks: Iterable) -> None:
    """Print renderables separated by blank lines; ``Text`` as :class:`Prose`. Lines are never
    cropped: a FitTable (or --wide) decides its own width."""
    for i, b in enumerate(blocks):
        if i:
            console.print()
        console.print(Prose(b) if isinstance(b, Text) else b, crop=False)


_print_blocks = print_blocks


def kv_lines(console: Console, pairs: Iterable[tuple[str, str]], width: Optional[int], key_width: int = 11) -> list[Text]:
    """``key:       value`` lines, long values wrapped at spaces under the value (plain output)."""
    out = []
    for key, value in pairs:
        head = f"{key}:".ljust(key_width) + " "
        room = max(20, (width or UNLIMITED) - len(head))
        for i, line in enumerate(Text(value).wrap(console, room)):
            line.rstrip()
            out.append(Text(head if i == 0 else " " * len(head)) + line)
    return out


def print_lines(console: Console, lines: Iterable[Text]) -> None:
    """Lines laid out already (fitted rows): printed as they are, never wrapped or cropped."""
    for line in lines:
        console.print(line, soft_wrap=True)


# --------------------------------------------------------------------------- train


def _cures(m: dict) -> str:
    """The model line's norm, dropout and skip connections (nothing when the net has none)."""
    out = ""
    if m.get("norm", "none") != "none":
        out += f", {m['norm']} norm"
    drops = m.get("dropout") or []
    if any(drops):
        out += ", dropout " + (fmt(drops[0]) if len(set(drops)) == 1 else "[" + ", ".join(fmt(p) for p in drops) + "]")
    if m.get("residual_layers"):
        out += ", skip around " + ", ".join(m["residual_layers"])
    return out


def _run_lines(info: dict) -> list[tuple[str, str]]:
    m = info["model"]
    sizes = " → ".join(str(s) for s in m["sizes"])
    act = m["activation"] + (f" ({fmt_options(m['activation_options'])})" if m["activation_options"] else "")
    shapes = ", ".join(f"{n} {list(s)}" for n, s in m["params"].items())
    d = info["data"]
    loss = info["loss"]
    opt = info["optimizer"]
    lines = [
        ("model", f"{'TwoLayerNet' if len(m['sizes']) == 3 else 'MLP'} {sizes}, {act}, bias {'on' if m['bias'] else 'off'}"
                  + (f", {m['init']} init" if m.get("init", "default") != "default" else "") + _cures(m)),
        ("parameters", f"{m['parameter_count']:,}: {shapes}"),
        ("loss", f"{loss['name']} ({fmt_options(loss['options'])})" if loss["options"] else loss["name"]),
        ("optimizer", f"{opt['name']} ({fmt_options(opt['options'])})"
                      + (f", {opt['implementation']} implementation" if opt.get("implementation") else "")),
        ("device", info["device"]),
        *([("threads", info["threads_why"])] if info.get("threads_why") else []),
        ("data", f"{d['source']}, {d['samples']} {'training rows' if d.get('validation') else 'samples'}, "
                 f"batch {d['batch_size']}, {d['batches_per_epoch']} batch(es)/epoch, "
                 f"shuffle {'on' if d['shuffle'] else 'off'}" + (", drop_last" if d.get("drop_last") else "")
                 + (f" ({d['drop_last_why']})" if d.get("drop_last_why") else "")
                 + (f"; {d['dropped']} row(s) with missing cells left out" if d.get("dropped") else "")),
        ("steps", f"{info['steps']} (seed {info['seed']})"),
    ]
    if d.get("classes"):
        shown = ", ".join(d["classes"][:10]) + (", …" if len(d["classes"]) > 10 else "")
        lines.append(("classes", f"{len(d['classes'])}: {shown}"))
    if d.get("validation"):
        lines.append(("validation", d["validation"]["source"] or f"{d['validation']['rows']} rows"))
    if d.get("standardize") or d.get("standardize_target"):
        what = " and ".join(w for w, on in (("features", d.get("standardize")), ("targets", d.get("standardize_target")))
                            if on)
        lines.append(("scaling", f"{what} standardized with the training rows' mean and std"))
    ev = info.get("evaluation")
    if ev:
        every = f"every {ev['every']} steps" + (" (each epoch)" if ev["every"] == ev["per_epoch"] else "")
        text = f"{every} and at the end, on all validation and all training rows"
        if ev.get("early_stopping"):
            es = ev["early_stopping"]
            text += f"; early stopping: patience {es['patience']}, min_delta {fmt(es['min_delta'])}"
        if ev.get("save_best"):
            text += f"; best model → {ev['save_best']}"
        lines.append(("evaluate", text))
    sched = dict(info.get("scheduler") or {"name": "none"})
    if sched.get("name", "none") != "none":
        name = sched.pop("name")
        lines.append(("schedule", f"{name} ({fmt_options({k: v for k, v in sched.items() if v is not None})})"))
    extras = []
    if info.get("clip_grad_norm") is not None:
        extras.append(f"clip grad norm at {fmt(info['clip_grad_norm'])}")
    if info.get("on_nonfinite") == "skip":
        extras.append("skip steps with non-finite values")
    if info.get("detect_anomaly"):
        extras.append("autograd anomaly detection (slower)")
    if info.get("zero_grad") is False:
        extras.append("no zero_grad: gradients accumulate across steps")
    if extras:
        lines.append(("guards", ", ".join(extras)))
    dist = info.get("distributed")
    if dist:
        lines.append(("processes", f"{dist['world']} ranks, DistributedDataParallel over {dist['backend']}; "
                                   f"each rank takes a slice of every global batch of {d['batch_size']}"))
    if info.get("precision", "fp32") != "fp32" or info.get("compile"):
        lines.append(("precision", f"{info.get('precision', 'fp32')}" + (", torch.compile" if info.get("compile") else "")))
    resume = info.get("resume")
    if resume:
        lines.append(("resume", f"from {resume['path']} at step {resume['step']}, running steps "
                                f"{resume['step'] + 1}…{info['steps']}"))
        for change in resume["changes"]:
            lines.append(("changed", change))
    return lines


def _param_short(name: str) -> str:
    """``layerK.weight`` → ``wK``, ``layerK.bias`` → ``bK`` (train's abbreviated headers)."""
    layer, _, kind = name.partition(".")
    if layer.startswith("layer") and layer[5:].isdigit() and kind in ("weight", "bias"):
        return kind[0] + layer[5:]
    return name


def _param_order(names: list[str]) -> list[str]:
    """Which per-parameter columns stay longest on a narrow terminal: weights before biases, and of
    each the first and last layers before the middle ones."""
    def ends_first(group: list[str]) -> list[str]:
        out, lo, hi = [], 0, len(group) - 1
        while lo <= hi:
            out.append(group[lo])
            if hi != lo:
                out.append(group[hi])
            lo, hi = lo + 1, hi - 1
        return out

    weights = [n for n in names if not n.endswith(".bias")]
    return ends_first(weights) + ends_first([n for n in names if n.endswith(".bias")])


EVAL_COLUMNS = {"classification": ("train_loss", "val_loss", "train_accuracy", "val_accuracy"),
                "regression": ("train_loss", "val_loss", "val_mae", "val_r2")}
EVAL_SHORT = {"train_loss": "train", "val_loss": "val", "train_accuracy": "train_acc", "val_accuracy": "val_acc",
              "val_mae": "mae", "val_r2": "r2"}


def train_columns(names: list[str], total_steps: int, *, scheduled: bool, scale: bool, skips: bool,
                  epochs: int = 1, evaluation: tuple[str, ...] = ()) -> list[Col]:
    """The columns of train's step rows, in order: step, epoch, loss, grad_norm, each parameter's
    gradient norm, lr, the fp16 loss scale, epoch_loss, the evaluation's columns (with validation
    data) and a marker for skipped steps.

    step, loss, grad_norm and val_loss are always shown. On a narrow terminal the others give way in
    this order: a constant lr (the start panel shows it), the biases' norms, then without evaluation
    epoch and epoch_loss before the weights' norms (weights: first and last layer kept longest), with
    evaluation the weights' norms first, then epoch, the training-rows metrics and epoch_loss; last a
    scheduled lr, the loss scale and the other validation metrics."""
    order = _param_order(names)
    weights = [n for n in order if not n.endswith(".bias")]
    biases = [n for n in order if n.endswith(".bias")]
    train_side = [k for k in evaluation if k.startswith("train_")]
    val_side = [k for k in evaluation if k.startswith("val_") and k != "val_loss"]
    # first to give way first; each list ends with the column kept longest
    give_way = (([] if scheduled else ["lr"]) + biases[::-1]
                + (weights[::-1] + ["epoch"] + train_side[::-1] + ["epoch_loss"] if evaluation
                   else ["epoch", "epoch_loss"] + weights[::-1])
                + (["lr"] if scheduled else []) + (["loss_scale"] if scale else []) + val_side[::-1])
    drop = {name: len(give_way) - k for k, name in enumerate(give_way)}

    def col(name: str, width: int = NUM_WIDTH, short: Optional[str] = None, align: str = "right") -> Col:
        return Col(name, short=short, align=align, width=width, drop=drop.get(name, 0))

    cols = [col("step", len(str(total_steps))), col("epoch", len(str(max(1, epochs)))), col("loss"),
            col("grad_norm")]
    cols += [col(n, short=_param_short(n)) for n in names]
    cols.append(col("lr"))
    if scale:
        cols.append(col("loss_scale", short="scale"))
    cols.append(col("epoch_loss", short="ep_loss"))
    cols += [col(k, short=EVAL_SHORT.get(k)) for k in evaluation]
    if skips:
        cols.append(col("", len("skipped"), align="left"))
    return cols


TRAIN_HINT = "--wide shows every column, --metrics writes every number"
TRAIN_LEGEND = "wK, bK = the gradient norms of layerK.weight, layerK.bias"
TRAIN_LEGEND_NO_BIAS = "wK = the gradient norm of layerK.weight"


class Starting:
    """A transient line on a terminal from the moment the config is read until the first real output:
    loading torch and building the run take seconds, and the terminal is never blank meanwhile.
    Nothing on plain output (pipes, files, NO_COLOR terminals keep their exact text)."""

    def __init__(self, console: Console, text: str, enabled: bool = True):
        self.status = None
        if enabled:
            line = text
            # one line beside the spinner, cut with an ellipsis; room is left for the terminal's own "^C"
            # echo, which would otherwise wrap and leave the line behind when the spinner erases itself
            room = max(10, console.width - 5)
            line = line if len(line) <= room else line[:room - 1] + "…"
            self.status = console.status(Text(line, style="dim"), spinner="dots")
            self.status.start()
            self._forget = on_interrupt(self.stop)  # Ctrl-C while torch loads: the cursor comes back

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
            self._forget()

    def __enter__(self) -> "Starting":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class TrainReport:
    """Start panel, a row every ``log_every`` steps (plus the first and last), summary at the end.

    The rows fit the console's width: :func:`train_columns` says which per-parameter columns give way
    first (``wide``: every column)."""

    show_progress = True  # the live displays (the bar, the line while torch loads); off for recorded output

    def __init__(self, console: Console, *, plain: bool, quiet: bool = False, json_out: Optional[IO] = None,
                 wide: bool = False):
        self.console, self.plain, self.quiet, self.wide = console, plain, quiet, wide
        self.json_out = json_out  # --format json: the summary document goes here, everything else to console
        self.progress = None
        self.task = None
        self.waiting: Optional[Starting] = None

    def starting(self, text: str) -> Starting:
        """Show ``text`` (transient, terminal only) until :meth:`start`; use as a context manager."""
        from backprop_cli.runs.torchrun import rank

        self.waiting = Starting(self.console, f"backprop train: loading torch … {text}",
                                enabled=not (self.plain or self.quiet) and self.show_progress and rank() == 0)
        return self.waiting

    def start(self, info: dict, log_every: int) -> None:
        if self.waiting is not None:
            self.waiting.stop()
        self.log_every = log_every
        self.total = info["steps"]
        self.first = info.get("start_step", 0) + 1
        self.names = list(info["model"]["params"])
        scheduled = (info.get("scheduler") or {}).get("name", "none") != "none"
        self.scale = info.get("precision") == "fp16"
        self.skips = self.scale or info.get("on_nonfinite") == "skip"
        per_epoch = max(1, info["data"].get("batches_per_epoch", 1))
        kind = "regression" if info["task"] == "regression" else "classification"
        self.evaluation = EVAL_COLUMNS[kind] if info.get("evaluation") else ()
        cols = train_columns(self.names, self.total, scheduled=scheduled, scale=self.scale, skips=self.skips,
                             epochs=-(-self.total // per_epoch), evaluation=self.evaluation)
        self.layout = fit(cols, [], None if self.wide else self.console.width, plain=self.plain)
        if self.quiet:
            return
        lines = _run_lines(info) + [("log every", f"{log_every} step(s)")]
        legend = None
        if any(_param_short(n) != n for n in self.names):
            legend = TRAIN_LEGEND if any(n.endswith(".bias") for n in self.names) else TRAIN_LEGEND_NO_BIAS
        note = self.layout.note(TRAIN_HINT, legend)
        if self.plain:
            print_lines(self.console, kv_lines(self.console, lines, self.console.width))
            self.console.print("")
            if note:
                print_blocks(self.console, [Text(note)])
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(Panel(grid, title="backprop train", title_align="left", expand=False))
            if note:
                self.console.print(Text(note, style="dim"))
            if self.total > log_every and self.show_progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), console=self.console, transient=True)
                self.task = self.progress.add_task("train", total=self.total, completed=self.first - 1)
        print_lines(self.console, self.layout.header())
        if self.progress is not None:
            self.progress.start()

    def cells(self, r: StepRecord) -> list[str]:
        """A row's cells, one per column of :func:`train_columns`."""
        cells = [str(r.step), "" if r.epoch is None else str(r.epoch), fmt(r.loss), fmt(r.grad_norm)]
        cells += [fmt(r.grad_norms.get(n, math.nan)) for n in self.names]
        cells.append(fmt(r.lr))
        if self.scale:
            cells.append(fmt(r.loss_scale))
        cells.append("" if r.epoch_loss is None else fmt(r.epoch_loss))
        ev = r.evaluation or {}
        cells += [fmt(ev[k]) if k in ev else "" for k in self.evaluation]
        if self.skips:
            cells.append("skipped" if r.skipped else "")
        return cells

    def step(self, r: StepRecord) -> None:
        if self.quiet:
            return
        self.last = r
        if is_logging_step(r.step, self.first, self.log_every, self.total) or r.skipped:
            self._print_row(r)
        if self.progress is not None:
            self.progress.update(self.task, completed=r.step)

    def _print_row(self, r: StepRecord) -> None:
        self.printed = r.step
        print_lines(self.console, self.layout.row(self.cells(r)))

    def warn(self, text: str) -> None:
        """A diagnostics warning, once, where it arose in the table (quiet: in the summary only)."""
        if self.quiet:
            return
        if self.plain:
            print_blocks(self.console, [Text(f"warning: {text}")])
        else:
            print_blocks(self.console, [Text(f"! {text}", style="bold yellow")])

    def finish(self, summary: Summary, outputs: dict[str, str], status: str, reason: Optional[str] = None) -> None:
        if self.progress is not None:
            self.progress.stop()
        last = getattr(self, "last", None)
        if last is not None and not self.quiet and getattr(self, "printed", None) != last.step:
            self._print_row(last)  # a run that stopped early (or was interrupted) shows where it stopped
        if self.json_out is not None:
            try:
                self.json_out.write(json_text(train_document(summary.as_dict(), outputs, status, reason)) + "\n")
                self.json_out.flush()
            except BrokenPipeError:
                raise OutputClosed() from None
        lines = _summary_lines(summary, outputs, status, reason, self.quiet)
        if self.plain:
            if not self.quiet:
                self.console.print("")
            print_lines(self.console, kv_lines(self.console, lines, self.console.width))
        else:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold green" if status == "done" else "bold yellow")
            grid.add_column()
            for k, v in lines:
                grid.add_row(k, v)
            self.console.print(grid)
        if not self.quiet:
            for block in _evaluation_tables(summary.evaluation, self.plain, self.wide):
                self.console.print()
                self.console.print(block, crop=False)


def _evaluation_tables(detail: Optional[dict], plain: bool, wide: bool = False) -> list:
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


def _summary_lines(s: Summary, outputs: dict[str, str], status: str, reason: Optional[str],
                   quiet: bool = False) -> list[tuple[str, str]]:
    rate = fmt(s.steps_per_s) if not math.isnan(s.steps_per_s) else "-"
    why = f" ({reason})" if reason and status != "done" else ""
    epochs = f", epoch {s.epochs}" if s.epochs else ""
    lines = [
        (status, f"{s.steps} step(s){epochs} in {fmt(s.wall_time)} s ({rate} steps/s){why}"),
        ("batch loss", f"first {fmt(s.first_loss)}, last {fmt(s.last_loss)}, best {fmt(s.best_loss)} "
                       f"(step {s.best_step}): each the loss of one batch"
         if s.steps else "no step completed"),
    ]
    if not math.isnan(s.epoch_loss):
        lines.append(("epoch loss", f"{fmt(s.epoch_loss)}: the mean over every row of the last complete epoch"))
    v = s.validation
    if v:
        metrics = ", ".join(f"{k} {fmt(v[k])}" for k in ("accuracy", "mae", "r2") if k in v)
        lines.append(("validation", f"loss {fmt(v['loss'])}" + (f", {metrics}" if metrics else "")
                      + f" (all validation rows, last evaluation); best loss {fmt(v['best_loss'])} at step "
                      f"{v['best_step']}"))
    if s.clipped:
        lines.append(("clipped", f"{s.clipped} of {s.steps} step(s)"))
    if s.skipped:
        lines.append(("skipped", f"{s.skipped} step(s) with non-finite values"))
    if s.warnings and quiet:
        lines += [("warning", w) for w in s.warnings]
    elif s.warnings:
        lines.append(("warnings", f"{len(s.warnings)}, above"))
    for what, text in outputs.items():
        lines.append((what, text if text.startswith("not written") else f"wrote {text}"))
    return lines


# --------------------------------------------------------------------------- inspect-grads

INSPECT_COLUMNS = [Col("parameter", align="left"), Col("shape", align="left", drop=7), Col("norm"),
                   Col("mean", drop=5), Col("std", drop=6), Col("min", drop=3), Col("max", drop=4), Col("abs_max"),
                   Col("zero_fraction", short="zeros", drop=1), Col("grad_to_weight", short="g/w", drop=2)]


def render_inspect(console: Console, plain: bool, result: dict, wide: bool = False) -> None:
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples); "
                "gradients as optimizer.step() would use them")
    t = FitTable("gradients", INSPECT_COLUMNS, plain=plain, wide=wide, label=0)
    for name, s in result["params"].items():
        shape = "×".join(str(d) for d in s["shape"]) or "scalar"
        if s["norm"] is None:
            t.add_row(name, shape, "None", *([""] * 7))
            continue
        t.add_row(name, shape, fmt(s["norm"]), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]),
                  fmt(s["abs_max"]), fmt(s["zero_fraction"]), fmt(s["grad_to_weight"]))
    legend = Text("norm: ‖g‖₂   abs_max: max |g|   zero_fraction: share of exact zeros   "
                  "grad_to_weight: ‖g‖/‖w‖", style="" if plain else "dim")
    blocks: list = [head, t, legend]
    if result["warnings"]:
        blocks.append(Text("\n".join(f"! {w}" for w in result["warnings"]), style="" if plain else "bold yellow"))
    clip = result.get("clip")
    if clip is not None:
        ct = FitTable(f"clip_grad_norm_(max_norm={fmt(clip['max_norm'])}): "
                      f"{'clipped' if clip['clipped'] else 'not clipped (total norm is within max_norm)'}",
                      [Col("parameter", align="left"), Col("norm before", short="before"),
                       Col("norm after", short="after")], plain=plain, wide=wide, label=0)
        for name, s in result["params"].items():
            if s["norm"] is not None:
                ct.add_row(name, fmt(s["norm"]), fmt(clip["norms"][name]))
        ct.add_row("total", fmt(clip["total_norm_before"]), fmt(clip["total_norm_after"]))
        blocks.append(ct)
    for name, text in result["text"].items():
        block = Text(f"{name}.grad\n", style="" if plain else "bold cyan")
        if clip is not None:
            block.append("before clipping:\n" + text + "\nafter clipping:\n" + clip["text"][name], style="")
        else:
            block.append(text, style="")
        blocks.append(block)
    blocks.append(Text("(train --no-zero-grad skips zero_grad, so these would add onto the previous step's)",
                       style="" if plain else "dim"))
    print_blocks(console, blocks)


# --------------------------------------------------------------------------- check-grads

CHECK_COLUMNS = [Col("parameter", align="left"), Col("elements", short="n", drop=3),
                 Col("chain_rule.max_abs", short="chain.abs"), Col("chain_rule.max_rel", short="chain.rel", drop=2),
                 Col("finite_diff.max_abs", short="fd.abs"), Col("finite_diff.max_rel", short="fd.rel", drop=2),
                 Col("finite_diff.checked", short="fd.checked", drop=1), Col("pass", align="left")]
CHECK_LEGEND = "n = elements, chain = chain_rule, fd = finite_diff, abs = max_abs, rel = max_rel"


def render_check(console: Console, plain: bool, result: dict, wide: bool = False) -> None:
    tol = result["tolerance"]
    t = FitTable("autograd vs the hand-written chain rule vs float64 central differences", CHECK_COLUMNS,
                 plain=plain, wide=wide, label=0, legend=CHECK_LEGEND)
    for name, p in result["params"].items():
        ok = Text("PASS" if p["pass"] else "FAIL", style="" if plain else "green" if p["pass"] else "bold red")
        t.add_row(name, str(p["elements"]), fmt(p["chain_rule"]["max_abs"]), fmt(p["chain_rule"]["max_rel"]),
                  fmt(p["finite_diff"]["max_abs"]), fmt(p["finite_diff"]["max_rel"]),
                  str(p["finite_diff"]["checked"]), ok)
    b = result["batch"]
    head = Text(f"loss {fmt(result['loss'])} on batch {b['index']} ({b['size']} samples)")
    foot = Text(f"tolerance ({tol['dtype']}): |autograd − other| ≤ {fmt(tol['atol_fraction_of_max'])}·max|g| + "
                f"{fmt(tol['rtol'])}·|g| per element; finite-difference step {fmt(tol['finite_diff_step'])}\n"
                + ("all gradients agree: PASS" if result["pass"] else
                   "some gradients disagree or cannot be checked (below): FAIL" if result.get("problems")
                   else "some gradients disagree: FAIL"))
    blocks = [head, t, foot]
    if result.get("problems"):
        blocks.append(Text("\n".join(f"! {p}" for p in result["problems"]), style="" if plain else "bold yellow"))
    print_blocks(console, blocks)


# --------------------------------------------------------------------------- evaluate


def render_evaluate(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    head = Text(f"{r['checkpoint']} (step {r['step']}) on {r['data']}: {r['rows']} rows")
    t = FitTable("", [Col("metric", align="left"), Col("value")], plain=plain, wide=wide)
    t.add_row("loss", fmt(r["loss"]))
    for key in ("accuracy", "mae", "r2"):
        if key in r:
            t.add_row(key, fmt(r[key]))
    print_blocks(console, [head, t, *_evaluation_tables(r, plain, wide)])


# --------------------------------------------------------------------------- explain


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


# --------------------------------------------------------------------------- compare-optimizers

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
                   steps: int, quiet: bool = False, wide: bool = False) -> None:
    seeds = len(summary[0]["seeds"]) if summary else 1
    diverged = any(e.get("diverged") for e in summary)
    cols = [Col("label", align="left")] + ([Col("status", align="left")] if diverged else [])
    cols += [COMPARE_COLUMNS[k] for k in COMPARE_KEYS]
    impl = summary[0].get("implementation") if summary else None
    kernel = f"{impl} optimizer implementation" if impl else "optimizer implementation"
    if seeds == 1:
        title = f"{steps} steps, same initial weights, batches and {kernel}"
    else:
        title = (f"{steps} steps, mean ± std over {seeds} seeds (each seed: one initialisation and data order "
                 f"for every optimizer), same {kernel}")
    notes = _divergence_notes(summary, seeds)
    t = FitTable(title, cols, plain=plain, wide=wide, label=0, caption="\n".join(notes) or None)
    for e in summary:
        cells: list[Cell] = [e["label"]] + ([_status(e, seeds)] if diverged else [])
        for key in COMPARE_KEYS:
            text = _ms(e, key, seeds)
            if key in e["best_in"]:
                cells.append(Text(f"{text} *") if plain else Text(text, style="bold green"))
            else:
                cells.append(text)
        t.add_row(*cells)
    legend = Text(("* best in its column. " if plain else "green: best in its column. ")
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


# --------------------------------------------------------------------------- find-lr


def render_find_lr(console: Console, plain: bool, r: dict, wide: bool = False) -> None:
    lrs, smoothed = r["lrs"], r["smoothed_losses"]
    head = Text(f"learning-rate range test: {r['config']}, {r['optimizer']}, lr from {fmt(r['start'])} to "
                f"{fmt(r['end'])} over at most {r['steps']} steps")
    if r["stopped_early"]:
        ran = Text(f"stopped after {len(lrs)} step(s): {r['stop_reason']}")
    else:
        ran = Text(f"ran all {len(lrs)} steps; the loss never passed 4× its minimum (try a larger --end)")
    blocks: list = [head, ran]
    if lrs:
        blocks.append(Text(f"smoothed loss, lr {fmt(lrs[0])} → {fmt(lrs[-1])} (log scale): "
                           f"{sparkline(smoothed, width=min(60, len(smoothed)))}"))
    t = FitTable("suggestions", [Col("rule", align="left"), Col("lr")], plain=plain, wide=wide)
    t.add_row("steepest descent of the smoothed loss", fmt(r["suggested_lr"]) if r["suggested_lr"] else "none")
    t.add_row("the smoothed loss's minimum / 10", fmt(r["min_loss_lr"]) if r["min_loss_lr"] else "none")
    blocks.append(t)
    pick = r["suggested_lr"] or r["min_loss_lr"]
    if pick and r["drop"] < r["clear_drop"]:
        blocks.append(Text(f"the smoothed loss fell only {r['drop']:.0%} below its start: no clear descent, so these "
                           "are guesses from noise; check train's warnings (vanishing gradients?) before the lr",
                           style="" if plain else "bold yellow"))
    if pick:
        blocks.append(Text(f"use it: backprop train --config {r['config']} --set optimizer.lr={pick:.2g}",
                           style="" if plain else "bold"))
    else:
        blocks.append(Text("no suggestion: the loss did not fall; try a smaller --start", style="" if plain else "bold yellow"))
    print_blocks(console, blocks)
