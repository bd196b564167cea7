"""The `backprop` command: the typer app, its commands registered in one place. Thin: each command's module
(cli/train.py, cli/plot.py, ...) parses options, calls runs/ (or config/, data/, io/) and hands the result to
render/; cli/common.py maps known errors to exit codes.

Nothing imported at module level here may import torch (or pydantic): `backprop --help` stays fast.
No `from __future__ import annotations` in cli/ either: typer would then evaluate each command's
annotations from their text (about 10 ms of every start, measured).
"""

import sys
from typing import Annotated, Optional

import typer

from backprop_cli import __version__
from backprop_cli.cli import (check_grads, compare, config, evaluate, exercise, explain, export, find_lr, graph,
                              init, inspect_grads, plot, predict, train, tune)
from backprop_cli.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED

app = typer.Typer(
    name="backprop",
    help="See backpropagation at work: train a small network from a YAML file and watch its "
    "loss and gradients step by step.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show or check a config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(exercise.exercise_app, name="exercise")

# the order of --help
COMMANDS = [train.train, inspect_grads.inspect_grads, check_grads.check_grads, explain.explain, evaluate.evaluate,
            predict.predict, export.export, compare.compare_optimizers, plot.plot, find_lr.find_lr, tune.tune,
            graph.graph, init.init]
CONFIG_COMMANDS = [config.config_show, config.config_validate]
for group, commands in ((app, COMMANDS), (config_app, CONFIG_COMMANDS), (exercise.exercise_app, exercise.COMMANDS)):
    for fn in commands:
        group.command(fn.cli_name, epilog=fn.cli_epilog)(fn)


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


def main() -> None:
    from backprop_cli.io.signals import install, leaving

    install()  # again, for callers of this function: SIGINT/SIGTERM end the command with one line
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(EXIT_INTERRUPTED)
    finally:
        leaving()  # the command is over: a signal now would only cut Python's shutdown short (exit -2)


__all__ = ["app", "main", "EXIT_BAD_INPUT"]
