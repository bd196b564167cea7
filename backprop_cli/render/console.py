"""Console policy: rich on a terminal, plain lines when output is piped or NO_COLOR is set; number
formatting and error lines. No torch.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Optional

from rich.console import Console

from backprop_cli.errors import OutputClosed, _escape, error_line, shown  # noqa: F401 - shown: the one helper

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

# what a terminal acts on in text: C0 controls but tab and line break, DEL and the C1 controls (CSI, OSC)
_TERMINAL_CONTROLS = {c: _escape(chr(c)) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))}


class _Console(Console):
    """A console that turns a closed output (``backprop ... | head``) into :class:`OutputClosed`, and that
    never writes a terminal control character it was not asked to: text segments are escaped (ESC, BEL,
    CR, C1 controls) whatever renderable they came from; only rich's own control segments (the cursor
    moves of the progress bars and spinners) and line breaks go out as they are."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise OutputClosed()

    def _render_buffer(self, buffer):  # rich's hook between segments and the text written
        from rich.segment import Segment

        return super()._render_buffer(
            Segment(text.translate(_TERMINAL_CONTROLS), style, control) if not control else Segment(text, style, control)
            for text, style, control in buffer)

def make_console(stream: Optional[IO] = None) -> Console:
    stream = stream or sys.stdout
    plain = plain_output(stream)
    return _Console(file=stream, highlight=False, no_color=plain, force_terminal=not plain,
                    emoji=False, width=plain_width() if plain else None)

def loading_line(command: str, detail: str = "") -> str:
    """The transient line of every command that imports torch, until its first output."""
    return f"backprop {command}: loading torch … {detail}".rstrip()


def _text(line: str):
    from rich.text import Text

    return Text(line, style="dim")


class Starting:
    """A transient line on a terminal from the moment the config is read until the first real output:
    loading torch and building the run take seconds, and the terminal is never blank meanwhile.
    Nothing on plain output (pipes, files, NO_COLOR terminals keep their exact text)."""

    show = True  # off for recorded output (tests)

    def __init__(self, console: Console, text: str, enabled: bool = True):
        self.status = None
        if enabled and self.show:
            line = text
            # one line beside the spinner, cut with an ellipsis; room is left for the terminal's own "^C"
            # echo, which would otherwise wrap and leave the line behind when the spinner erases itself
            room = max(10, console.width - 5)
            line = line if len(line) <= room else line[:room - 1] + "…"
            self.status = console.status(_text(line), spinner="dots")
            self.status.start()
            from backprop_cli.io.signals import on_interrupt

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

def print_errors(messages: list[str], stream: Optional[IO] = None) -> None:
    stream = stream or sys.stderr
    for m in messages:
        print(error_line(m), file=stream)  # one line, whatever names the message holds
    stream.flush()
