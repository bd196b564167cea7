"""Exceptions that the CLI turns into exit codes. Importing this module is cheap (no torch)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130


class BackpropError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BackpropError):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(BackpropError):
    """The data cannot be loaded, or does not fit the model or the loss."""


class DeviceError(BackpropError):
    """The requested device is not available."""


class CheckpointError(BackpropError):
    """A checkpoint cannot be read, or does not fit the config."""


class OutputError(BackpropError):
    """An output file cannot be written."""
