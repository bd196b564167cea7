"""`backprop config show` and `backprop config validate`. No torch."""

import sys
from enum import Enum
from typing import Annotated

import typer

from backprop_cli.cli.common import command, fail, load
from backprop_cli.cli.options import ConfigOpt, Format, FormatOpt, SetOpt, examples
from backprop_cli.errors import EXIT_BAD_INPUT, ConfigError, shown


class ShowFormat(str, Enum):
    yaml = "yaml"
    json = "json"


@command("show", epilog=examples("backprop config show -c configs/seed.yaml",
                                            "backprop config show -c configs/seed.yaml --set optimizer=adam "
                                            "--format json"))
def config_show(config: ConfigOpt, set_: SetOpt = None,
                format: Annotated[ShowFormat, typer.Option("--format", help="yaml or json.")] = ShowFormat.yaml) -> None:
    """Print the resolved config (defaults filled in, overrides applied)."""
    from backprop_cli.config import to_yaml

    cfg = load(config, set_)
    if format == ShowFormat.json:
        from backprop_cli.render.documents import json_text

        sys.stdout.write(json_text(cfg.plain()) + "\n")
    else:
        sys.stdout.write(_derived_width(cfg, to_yaml(cfg)))


def _derived_width(cfg, text: str) -> str:
    """``input_size: auto`` with what it comes to, as a comment: the data is read (no torch) to count."""
    if cfg.model.input_size is not None or getattr(cfg.data, "kind", None) != "csv":
        return text
    from backprop_cli.data.load import read_table
    from backprop_cli.errors import DataError

    try:
        how = read_table(cfg).encoding.summary()
    except DataError as e:
        how = f"not known: {e}"
    return text.replace("  input_size: auto\n", f"  input_size: auto  # derived from the data: {how}\n", 1)


@command("validate", epilog=examples("backprop config validate -c configs/seed.yaml",
                                                "backprop config validate -c configs/csv.yaml --format json"))
def config_validate(config: ConfigOpt, set_: SetOpt = None, format: FormatOpt = Format.table) -> None:
    """Check a config file and its data (readable, the columns there, the derived input width) and the device:
    every problem at once, one per line (exit code 2), or `ok`. Torch is not imported."""
    try:
        cfg = load(config, set_)
        problems = []
    except ConfigError as e:
        cfg, problems = None, list(e.problems)
    if cfg is not None:
        from backprop_cli.config.values import device_problem
        from backprop_cli.data.load import data_problems

        problems = data_problems(cfg) + ([p] if (p := device_problem(cfg.device)) else [])
    if format == Format.json:
        from backprop_cli.render.documents import json_text, validate_document

        doc = validate_document(str(config), problems)
        sys.stdout.write(json_text(doc) + "\n")
        if not doc["ok"]:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    if problems:
        fail(problems, EXIT_BAD_INPUT)
    typer.echo(shown(f"{config}: ok"))
