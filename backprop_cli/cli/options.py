"""The options several commands share, each with one meaning everywhere, and the help text's form.

No torch or pydantic here: ``backprop --help`` imports this.
"""

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from backprop_cli.limits import MAX_SEEDS, MAX_COUNT, THREADS_DEFAULT, THREADS_PER_CORE


def _flags_take_no_value() -> None:
    """typer shows a `<bool>` placeholder after every flag (--quiet <bool>), as if it took a value; a
    flag takes none, so its type column stays empty."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flags_fixed", False):
        return  # a typer without the placeholder (or this fix already made)

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flags_fixed = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()


def readable_bounds(low, high, name: str = "N") -> Optional[str]:
    """A number option's bounds as a person reads them, in one unbreakable word: `N≥1`, `1≤N≤1000`.
    An upper bound at MAX_COUNT (2**50, there only to keep a count finite) is no bound anyone meets."""
    if high is not None and high >= MAX_COUNT:
        high = None
    if low is None and high is None:
        return None
    if high is None:
        return f"{name}≥{low}"
    return f"{name}≤{high}" if low is None else f"{low}≤{name}≤{high}"


def _bounds_read_as_text() -> None:
    """typer shows a ranged integer as `<int range> [0<=x<=1125899906842624]`, which a narrow --help
    wraps mid-number; its type column shows `N≥0` instead (the option's metavar for N, if it has one)
    and the help text no second copy."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_bounds_fixed", False) or not hasattr(TyperOption, "_get_number_range_help_str"):
        return  # this fix already made, or a typer that shows bounds some other way

    def display_type_rich(self, ctx):
        low, high = getattr(self, "min", None), getattr(self, "max", None)
        bounds = readable_bounds(low, high, self.metavar or ("x" if isinstance(low or high, float) else "N"))
        return bounds if bounds is not None and not self.is_flag else original(self, ctx)

    display_type_rich._bounds_fixed = True
    TyperOption.display_type_rich = display_type_rich
    TyperOption._get_number_range_help_str = lambda self: None


_bounds_read_as_text()


def _aliases_one_per_line() -> None:
    """typer joins an option's names with commas (`--train-steps,--steps`), one word that a narrow
    --help cuts to `--train-steps,--ste…`; each name goes on its own line instead. And a word of help
    longer than its column (OMP_NUM_THREADS at 60 columns) goes on over the next line, not cut to `…`."""
    import re

    from rich.text import Text
    from typer import rich_utils

    if getattr(rich_utils.highlighter, "_aliases_fixed", False):
        return
    names = re.compile(r"-{1,2}[\w-]+(,-{1,2}[\w-]+)+")
    base = type(rich_utils.highlighter)

    class OneNamePerLine(base):
        _aliases_fixed = True

        def __call__(self, text):
            if isinstance(text, str) and names.fullmatch(text):
                text = text.replace(",", "\n")
            elif isinstance(text, Text) and names.fullmatch(text.plain):
                text = Text(text.plain.replace(",", "\n"), style=text.style)
            text = super().__call__(text)
            if isinstance(text, Text):
                text.overflow = "fold"
            return text

    rich_utils.highlighter = OneNamePerLine()


def _aliases_fixed_at_the_first_help() -> None:
    """The fix above needs typer.rich_utils, whose import (rich.markdown, markdown_it: about 0.1 s) only --help
    needs: it is applied when a command or group first formats its help, not at every start."""
    from typer.core import TyperCommand, TyperGroup

    for cls in (TyperCommand, TyperGroup):
        original = cls.format_help
        if getattr(original, "_aliases_deferred", False):
            continue

        def format_help(self, ctx, formatter, _original=original):
            _aliases_one_per_line()
            return _original(self, ctx, formatter)

        format_help._aliases_deferred = True
        cls.format_help = format_help


_aliases_fixed_at_the_first_help()


def reflow(fn: Callable) -> Callable:
    """The docstring as --help shows it: each paragraph on one line, wrapped by the terminal, never
    broken mid-sentence where the source happens to break it."""
    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    fn.__doc__ = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    return fn


def examples(*commands: str) -> str:
    """An --help epilog: each example on its own line (tests/test_help.py runs every one)."""
    return "Examples:\n\n" + "\n\n".join(f"  {c}" for c in commands)


ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False, rich_help_panel="Config")
]

SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY.PATH=VALUE",
                 help="Override a config key (value parsed as YAML); repeatable.", rich_help_panel="Config"),
]

StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, max=MAX_COUNT, help="Total optimizer steps; same as --set "
                                                 "train.steps=N.", rich_help_panel="Config")]

EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, max=MAX_COUNT, help="Passes over the training rows; same as "
                                                   "--set train.epochs=N (instead of train.steps).",
                                                   rich_help_panel="Config")]

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Same as --set device=DEV (auto, cpu, cuda, "
                                                  "cuda:N, mps).", rich_help_panel="Config")]

ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help=f"CPU threads for torch (default: "
                                                   f"{THREADS_DEFAULT}); at most {THREADS_PER_CORE} × the cores. The start "
                                                   "panel says how many and why.",
                                                   rich_help_panel="Config")]

NoZeroGradOpt = Annotated[bool, typer.Option("--no-zero-grad", help="Teaching switch: skip optimizer.zero_grad() so "
                                             "gradients accumulate across steps; same as --set train.zero_grad=false.",
                                             rich_help_panel="Teaching")]

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print the final summary only: no start panel, step "
                                        "rows, progress bars or notes.", rich_help_panel="Output")]

MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Write every step's record (of every run) to "
                                                    "a .jsonl or .csv file.", rich_help_panel="Output")]

WideOpt = Annotated[bool, typer.Option("--wide", help="Show every column of every table, however wide (a narrow "
                                       "terminal then wraps the lines).", rich_help_panel="Output")]


class Format(str, Enum):
    table = "table"
    json = "json"

FormatOpt = Annotated[Format, typer.Option("--format", help="table (for people), or json: one JSON document alone "
                                           "on stdout (progress and step rows go to stderr).",
                                           rich_help_panel="Output")]

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Take the weights (and step) from "
                                                       "this checkpoint instead of the seeded init.",
                                                       rich_help_panel="Config")]

BatchOpt = Annotated[Optional[int], typer.Option("--batch", min=0, max=MAX_COUNT, help="Which batch of the data order, from 0 "
                                                 "(default: the one the next step would use).",
                                                 rich_help_panel="Config")]

TrainedOpt = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by train --save or "
                                          "--save-best.", show_default=False)]


def parse_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    digits = all(v.isascii() and v.isdigit() and len(v) <= 5 for v in (w, h))  # not '²', not 5,000 digits
    if not sep or not digits or not (100 <= int(w) <= 10000 and 100 <= int(h) <= 10000):
        shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
        raise typer.BadParameter(f"expected WIDTHxHEIGHT in pixels, each 100-10000 (got {shown})")
    return int(w), int(h)


SeedsOpt = Annotated[int, typer.Option("--seeds", min=1, max=MAX_SEEDS, help="Repeat for N seeds (init and data "
                                       "order) and report mean ± std.", rich_help_panel="Config")]
