"""The `backprop` command. Thin: parse options, call the library, map errors to exit codes.

Nothing imported at module level here may import torch (or pydantic): `backprop --help` stays fast.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from backprop_cli import __version__
from backprop_cli.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BackpropError, ConfigError

app = typer.Typer(
    name="backprop",
    help="See backpropagation at work: train a two-layer network from a YAML file and watch its "
    "loss and gradients step by step.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show or check a config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")

# --------------------------------------------------------------------------- shared options

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False, rich_help_panel="Config")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY.PATH=VALUE",
                 help="Override a config key (value parsed as YAML); repeatable.", rich_help_panel="Config"),
]


def _fail(messages: list[str], code: int) -> None:
    from backprop_cli.report import print_errors

    print_errors(messages)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Known problems become one `error: ...` line per problem on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            _fail(e.problems, e.exit_code)
        except BackpropError as e:
            _fail([str(e)], e.exit_code)
        except KeyboardInterrupt:
            _fail(["interrupted"], EXIT_INTERRUPTED)

    return wrapper


def _load(config: Path, overrides: Optional[list[str]], extra: Optional[list[str]] = None):
    from backprop_cli.config import load_config

    return load_config(config, list(overrides or []) + list(extra or []))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backprop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    """See backpropagation at work."""


# --------------------------------------------------------------------------- train


@app.command(epilog="Examples:\n\n  backprop train --config configs/seed.yaml\n\n"
             "  backprop train -c configs/regression.yaml --steps 500 --metrics run.jsonl\n\n"
             "  backprop train -c configs/regression.yaml --set optimizer.lr=0.1 --save final.pt")
@handle_errors
def train(
    config: ConfigOpt,
    set_: SetOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Same as --set train.steps=N.",
                                                 rich_help_panel="Config")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Same as --set device=DEV (auto, cpu, cuda, cuda:N, mps).",
                                                  rich_help_panel="Config")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", min=1, help="Print a row every N steps "
                                                     "(default: train.log_every, else about 20-50 rows).",
                                                     rich_help_panel="Output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the summary only.", rich_help_panel="Output")] = False,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Write every step's record to a .jsonl or .csv file.",
                                                    rich_help_panel="Output")] = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write a checkpoint (.pt) at the end.",
                                                 rich_help_panel="Output")] = None,
    no_zero_grad: Annotated[bool, typer.Option("--no-zero-grad", help="Teaching switch: skip optimizer.zero_grad() "
                                               "so gradients accumulate across steps.", rich_help_panel="Teaching")] = False,
) -> None:
    """Train the configured two-layer network, printing the loss and gradient norms step by step."""
    extra = []
    if steps is not None:
        extra += ["train.steps=" + str(steps), "train.epochs=null"]
    if device is not None:
        extra.append(f"device={device}")
    cfg = _load(config, set_, extra)

    from backprop_cli.report import TrainReport, make_console, plain_output
    from backprop_cli.training import TrainOptions, run_training

    reporter = TrainReport(make_console(), plain=plain_output(), quiet=quiet)
    run_training(cfg, TrainOptions(metrics=metrics, save=save, log_every=log_every,
                                   zero_grad=not no_zero_grad), reporter)


# --------------------------------------------------------------------------- config


@config_app.command("show")
@handle_errors
def config_show(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    from backprop_cli.config import to_yaml

    sys.stdout.write(to_yaml(_load(config, set_)))


@config_app.command("validate")
@handle_errors
def config_validate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Check a config file; prints every problem at once (exit code 2) or `ok`."""
    _load(config, set_)
    typer.echo(f"{config}: ok")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main", "EXIT_BAD_INPUT"]
