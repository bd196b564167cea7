"""What every command does alike: load the config with its overrides, check outputs before any work,
map known problems to one line and an exit code, print JSON alone or the rendered table.

No torch here: each helper imports what it needs when it runs.
"""

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from backprop_cli.cli.options import Format, reflow
from backprop_cli.errors import EXIT_INTERRUPTED, BackpropError, ConfigError, OutputClosed, known_error


def training_overrides(steps: Optional[int], device: Optional[str], no_zero_grad: bool = False,
                        epochs: Optional[int] = None) -> list[str]:
    """The common options of every command that trains, as the config overrides they stand for."""
    if steps is not None and epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    from backprop_cli.config.overrides import Override

    extra = []  # each replaces the file's other key (config.load.REPLACES); with the other on the command line
    if steps is not None:  # too, both are named as an error
        extra.append(Override(f"train.steps={steps}", f"--steps {steps}"))
    if epochs is not None:
        extra.append(Override(f"train.epochs={epochs}", f"--epochs {epochs}"))
    if device is not None:
        extra.append(f"device={device}")
    if no_zero_grad:
        extra.append("train.zero_grad=false")
    return extra


def fail(messages: list[str], code: int) -> None:
    from backprop_cli.render.console import print_errors

    print_errors(messages)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Known problems become one `error: ...` line per problem on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OutputClosed, BrokenPipeError):
            output_closed()
        except ConfigError as e:
            fail(e.problems, e.exit_code)
        except BackpropError as e:
            fail([str(e)], e.exit_code)
        except KeyboardInterrupt:
            fail(["interrupted"], EXIT_INTERRUPTED)
        except (RuntimeError, MemoryError) as e:
            known = known_error(e)
            if known is None:
                raise
            fail([str(known)], known.exit_code)

    return wrapper


def output_closed() -> None:
    """The reader of our output went away (``backprop ... | head``): leave quietly with 141, the code a
    shell gives a command killed by SIGPIPE. Later writes (and Python's final flush) go to /dev/null."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    raise typer.Exit(OutputClosed.exit_code)


def command(name: Optional[str] = None, *, epilog: Optional[str] = None, loads_torch: bool = False) -> Callable:
    """A command function as the app registers it (cli/app.py): its --help reflowed, known problems
    mapped to one line and an exit code, its name (default: the function's, with dashes) and epilog.
    ``loads_torch``: the transient "loading torch …" line from the command's first moment (see
    :func:`loading_torch`)."""

    def make(fn: Callable) -> Callable:
        cli_name = name or fn.__name__.replace("_", "-")
        body = reflow(fn)
        if loads_torch:
            inner = body

            @functools.wraps(inner)
            def body(*args, **kwargs):
                with loading_torch(cli_name, kwargs.get("format"), kwargs.get("quiet", False)):
                    return inner(*args, **kwargs)

        wrapped = handle_errors(body)
        wrapped.cli_name = cli_name
        wrapped.cli_epilog = epilog
        return wrapped

    return make


_loading = []  # the line of the command running now, while it shows


def loading_torch(command: str, format=None, quiet: bool = False):
    """The transient line ``backprop COMMAND: loading torch …`` on a terminal, from the command's start
    until its first output (:func:`torch_loaded`, called by :func:`emit`) or its end: loading torch
    takes seconds, and the screen is never blank meanwhile. Not in JSON, with --quiet, nor on plain
    output (a pipe, a file, NO_COLOR). train shows the same line (render.train.TrainReport.starting)."""
    from backprop_cli.render.console import Starting, loading_line, make_console, plain_output

    shown = getattr(format, "value", format) != "json" and not quiet and not plain_output()
    line = Starting(make_console(), loading_line(command), enabled=shown)
    _loading.append(line)

    class Showing:
        def __enter__(self):
            return line

        def __exit__(self, *exc):
            line.stop()
            if line in _loading:
                _loading.remove(line)

    return Showing()


def torch_loaded() -> None:
    """The command's first output is about to be written: the loading line goes."""
    while _loading:
        _loading.pop().stop()


def load(config: Path, overrides: Optional[list[str]], extra: Optional[list[str]] = None):
    from backprop_cli.config import load_config

    return load_config(config, list(overrides or []) + list(extra or []))


def check_command_outputs(cfg, config: Path, outputs: dict, inputs: Optional[dict] = None) -> None:
    """Output paths are checked before any work: a bad one costs nothing and writes nothing. An output
    is never one of the command's inputs (the config, its data files, a checkpoint) nor another output."""
    from backprop_cli.io.paths import OUTPUT_KINDS, check_outputs, check_writable

    for option, path in outputs.items():
        if path is not None and option in OUTPUT_KINDS:
            suffixes, what = OUTPUT_KINDS[option]
            check_writable(path, suffixes, what)
    check_outputs(outputs, {**inputs_of(cfg, config), **(inputs or {})})


def inputs_of(cfg, config: Path) -> dict:
    """The files a config makes a command read, by the name the user knows them by."""
    from backprop_cli.config import CsvData

    inputs = {"--config": config}
    if isinstance(cfg.data, CsvData):
        inputs["data.path"] = cfg.data_path()
    if cfg.validation_path() is not None:
        inputs["data.validation"] = cfg.validation_path()
    return inputs


def flops(cfg) -> float:
    from backprop_cli.config import flops_per_step

    return flops_per_step(cfg)


def read_data(cfg):
    from backprop_cli.data.load import read_table

    return read_table(cfg)


def single_process(command: str) -> None:
    from backprop_cli.torchrun import under_torchrun

    if under_torchrun():
        raise BackpropError(f"{command} runs in one process; run it without torchrun "
                            "(only `backprop train` uses DistributedDataParallel)")


def render_with(name: str, console, plain: bool, *args, **kwargs) -> None:
    """Call ``render_<command>`` of its module in render/ (imported only when it renders)."""
    import importlib

    module = importlib.import_module(f"backprop_cli.render.{RENDERERS[name]}")
    getattr(module, name)(console, plain, *args, **kwargs)


RENDERERS = {"render_inspect": "inspect", "render_check": "inspect", "render_evaluate": "evaluation",
             "render_explain": "explain", "render_compare": "compare", "render_find_lr": "find_lr",
             "render_explain_net": "explain_net"}


def tensor_linewidth(wide: bool) -> int:
    """How wide torch may print tensors: the terminal's width (at most 120; --wide: 120)."""
    from backprop_cli.render.console import make_console

    return 120 if wide else max(40, min(120, make_console().width))


def emit(format: "Format", doc: dict, render: Callable) -> None:
    """JSON alone on stdout, or the rendered table."""
    torch_loaded()
    if format == Format.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(doc) + "\n")
        return
    from backprop_cli.render.console import make_console, plain_output

    render(make_console(), plain_output())


def input_file(path: Optional[Path], option: str) -> None:
    """A data file given on the command line is a regular file: checked before torch is imported."""
    if path is not None:
        from backprop_cli.errors import DataError
        from backprop_cli.io.files import open_regular

        try:
            open_regular(path, "file", DataError).close()
        except DataError as e:
            raise DataError(f"{e} ({option})") from None
