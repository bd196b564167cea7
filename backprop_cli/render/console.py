"""Console policy: rich on a terminal, plain lines when output is piped or NO_COLOR is set; number
formatting and error lines. No torch.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Optional

from rich.console import Console

from backprop_cli.errors import OutputClosed

UNLIMITED = 100_000  # the width of plain output without COLUMNS: tables never fold

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
