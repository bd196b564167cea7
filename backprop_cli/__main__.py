"""``python -m backprop_cli`` and the ``backprop`` command: the signal handlers first, then the CLI
(a Ctrl-C while typer, pydantic or torch load is one line, not a traceback)."""

from backprop_cli.signals import install


def main() -> None:
    install()
    from backprop_cli.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
