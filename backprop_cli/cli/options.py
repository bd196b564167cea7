"""The options several commands share, each with one meaning everywhere, and the help text's form.

No torch or pydantic here: ``backprop --help`` imports this.
"""

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from backprop_cli.limits import MAX_COUNT


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

ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: "
                                                   "OMP_NUM_THREADS, else torch's own choice, shared out among "
                                                   "torchrun's processes).", rich_help_panel="Config")]

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
