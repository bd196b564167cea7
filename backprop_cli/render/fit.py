"""Tables that fit the width they are printed in, and never cut a number or a name. No torch.

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

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, Union

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.text import Text

from backprop_cli.render.console import UNLIMITED, shown

NUM_WIDTH = 10  # the widest fmt() of a float32 value: "-1.234e-05"

GAP = "  "  # between columns

INDENT = "  "  # rows under a label on its own line; stacked rows

HIDDEN_HINT = "--wide shows every column, --format json every number"

@dataclass(frozen=True)
class Col:
    """One column: see "How to render a table that fits" at the top of this module."""

    name: str  # the header: the name of the same number in --format json and metrics files
    short: Optional[str] = None  # the documented abbreviation, used when the full headers do not fit
    align: str = "right"  # right (numbers) or left (names, text)
    drop: int = 0  # 0: always shown; the highest are hidden first when the table does not fit
    width: int = 0  # the widest value the column may hold (rows printed one at a time)

    def __post_init__(self) -> None:  # a header may be a name from a file (a class, a column): shown escaped
        object.__setattr__(self, "name", shown(self.name))
        if self.short is not None:
            object.__setattr__(self, "short", shown(self.short))

    def header(self, short: bool) -> str:
        return (self.short or self.name) if short else self.name

Cell = Union[str, Text]

# Every cell is measured by _plain and drawn by _text: names from files (classes, columns, parameters)
# are shown escaped there (errors.shown), so a cell is one line and holds no terminal control.

def _plain(cell: Cell) -> str:
    return shown(cell.plain if isinstance(cell, Text) else cell)

def _text(cell: Cell) -> Text:
    if isinstance(cell, Text):
        return cell.copy() if cell.plain.isprintable() else Text(shown(cell.plain), style=cell.style)
    return Text(shown(cell))

def _fold(text: Text, limit: int) -> list[Text]:
    """``text`` in pieces of at most ``limit`` characters (only what no layout can fit is folded), each
    broken after a space where one lies in the piece's second half, so that a number or word is not split
    over two lines unless it is longer than half the width; a continued piece keeps the text's indent."""
    plain = text.plain
    if limit <= 0 or len(plain) <= limit:
        return [text]
    indent = len(plain) - len(plain.lstrip(" "))
    indent = indent if indent < limit // 2 else 0
    cuts, start, room = [], 0, limit
    while len(plain) - start > room:
        space = plain.rfind(" ", start + room // 2, start + room)
        end = space + 1 if space > 0 else start + room
        cuts.append(end)
        start, room = end, limit - indent
    pieces = list(text.divide(cuts))
    return [pieces[0]] + [Text(" " * indent) + p for p in pieces[1:]]

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

def kv_lines(console: Console, pairs: Iterable[tuple[str, str]], width: Optional[int], key_width: int = 11) -> list[Text]:
    """``key:       value`` lines, long values wrapped at spaces under the value (plain output)."""
    out = []
    for key, value in pairs:
        head = f"{key}:".ljust(key_width) + " "
        room = max(20, (width or UNLIMITED) - len(head))
        for i, line in enumerate(Text(shown(value)).wrap(console, room)):  # a name in a value: escaped
            line.rstrip()
            out.append(Text(head if i == 0 else " " * len(head)) + line)
    return out

def print_lines(console: Console, lines: Iterable[Text]) -> None:
    """Lines laid out already (fitted rows): printed as they are, never wrapped or cropped."""
    for line in lines:
        console.print(line, soft_wrap=True)
