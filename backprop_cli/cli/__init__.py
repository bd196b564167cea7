"""The typer application: options, error mapping and one thin module per command."""
