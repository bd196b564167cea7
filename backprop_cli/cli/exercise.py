"""``backprop exercise list | start | check``: write a backward by hand, checked against autograd.

``list`` and ``start`` never import torch (the exercises are text);
``check`` does, and runs the learner's file in a separate process.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command
from backprop_cli.cli.options import examples

exercise_app = typer.Typer(help="Write a backward pass yourself and have it checked against autograd.",
                           no_args_is_help=True)


@command("list", epilog=examples("backprop exercise list", "backprop exercise start relu"))
def exercise_list() -> None:
    """List the exercises."""
    from backprop_cli.exercises import EXERCISES
    from backprop_cli.render.exercise import list_lines

    for line in list_lines(list(EXERCISES.values())):
        typer.echo(line)


@command("start", epilog=examples("backprop exercise start linear",
                                  "backprop exercise start two_layer_net --out net.py"))
def exercise_start(
    name: Annotated[str, typer.Argument(help="The exercise (exercise list shows them).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="The file to write (default: NAME.py); never "
                                                "overwritten.")] = None,
) -> None:
    """Write a Python file with the forward given and a backward to fill in; its docstring gives every shape."""
    from backprop_cli.errors import BackpropError
    from backprop_cli.exercises import EXERCISES, template
    from backprop_cli.io.atomic import write_atomic
    from backprop_cli.io.paths import check_writable

    if name not in EXERCISES:
        raise BackpropError(f"no exercise {name!r}; there are {', '.join(EXERCISES)}")
    path = out if out is not None else Path(f"{name}.py")
    check_writable(path, (".py",), "exercise")
    if path.exists():
        raise BackpropError(f"{path}: exists already; remove it or give --out OTHER.py (your work is never "
                            "overwritten)")
    write_atomic(path, lambda f: f.write(template(EXERCISES[name], str(path))))
    typer.echo(f"wrote {path}: fill in backward, then run: backprop exercise check {path}")


@command("check", epilog=examples("backprop exercise check docs/exercises/linear.py",
                                  "backprop exercise check docs/exercises/linear.py --reveal"))
def exercise_check(
    file: Annotated[Path, typer.Argument(help="Your exercise file (from exercise start).", show_default=False)],
    reveal: Annotated[bool, typer.Option("--reveal", help="Also print a reference backward (passed or not).")] = False,
    exercise: Annotated[Optional[str], typer.Option("--exercise", help="Which exercise the file is (default: its "
                                                    "EXERCISE = \"NAME\" line, else its file name).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", min=0.1, max=3600, metavar="SECONDS",
                                              help="How long your code may run (its import and the three calls).")] = 10.0,
) -> None:
    """Run your backward (in a separate process, float64, three sizes) and compare it with autograd.

    One line per gradient: exact, approximate (round-off) or wrong, and whether its shape is right, with a
    hint for the first wrong one. Exit code 0 when all pass, 1 otherwise, 2 when the file cannot be
    checked (no backward, it raises, returns the wrong count, runs past the time limit): then its own
    traceback is shown, trimmed to your file.
    """
    from backprop_cli.errors import BackpropError
    from backprop_cli.io.files import open_regular

    open_regular(file, "exercise file", BackpropError).close()
    from backprop_cli.render.exercise import check_lines
    from backprop_cli.runs.exercise import ExerciseFileError, check_file

    try:
        result = check_file(file, exercise, time_limit)
    except ExerciseFileError as e:
        from backprop_cli.render.console import print_errors

        print_errors([str(e)])
        if e.details:
            typer.echo(e.details, err=True)
        raise typer.Exit(2)
    if result["printed"].strip():
        typer.echo("your backward printed:\n" + result["printed"].rstrip(), err=True)
    for line in check_lines(result, reveal):
        typer.echo(line)
    if not result["pass"]:
        raise typer.Exit(1)



COMMANDS = [exercise_list, exercise_start, exercise_check]
