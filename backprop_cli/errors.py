"""Exceptions that the CLI turns into exit codes. Importing this module is cheap (no torch)."""

from __future__ import annotations

import re

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away


def shown(text, keep: str = "") -> str:
    """A text (a class or column name, a path, a value, a message) as it may be printed: every character that
    is not printable (control characters such as ESC, BEL and newline, C1 controls, format characters that
    reorder or hide text such as U+202E, line and paragraph separators, lone surrogates) is shown as its
    Python escape (``\\x1b``, ``\\n``, ``\\u202e``, ``\\ud800``); everything else, and the characters in
    ``keep``, as it is. The one helper for every name printed (render.console re-exports it): error lines
    (:func:`error_line`), every table cell and header (render/fit.py), panels and train's class list, the
    texts of a figure (render/plots.py)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def error_line(message: str) -> str:
    """The one line of an error: ``error: MESSAGE``, every name in it shown escaped (:func:`shown`), so a
    class name or path holding a newline or ESC can neither split the line nor drive the terminal."""
    return f"error: {shown(message)}"


class BackpropError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, *args, exit_code: "int | None" = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


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


class OutputClosed(BackpropError):
    """stdout (or stderr) was closed by its reader (``backprop train ... | head``): stop quietly."""

    exit_code = EXIT_OUTPUT_CLOSED

    def __init__(self, message: str = "output closed"):
        super().__init__(message)


class ResourceError(BackpropError):
    """The run needs more memory than the device has."""


_OOM_MARKERS = ("can't allocate memory", "not enough memory", "out of memory")


def known_error(e: BaseException) -> "BackpropError | None":
    """An exception from torch that is the user's to fix, as a one-line BackpropError (else None).

    Running out of memory (torch's CPU allocator, CUDA and MPS raise RuntimeError subclasses; Python
    raises MemoryError), which a config with a huge layer or dataset causes; and a failure of
    torch.compile (``compile: true``), which surfaces at the first forward.
    """
    if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(e).__name__
        return BackpropError(f"compile: torch.compile failed ({first[:200]}); set compile: false, "
                             "or fix what it names (on the CPU it needs a working C++ compiler)")
    if isinstance(e, MemoryError):
        return ResourceError("out of memory; lower model.hidden_size, data.samples or data.batch_size")
    if not isinstance(e, RuntimeError):
        return None
    text = str(e)
    if not any(m in text for m in _OOM_MARKERS):
        return None
    where = "CUDA" if "CUDA" in text else "MPS" if "MPS" in text else "the CPU"
    size = ""
    if (m := re.search(r"tried to allocate (\d+) bytes", text)):
        n = int(m.group(1)) / 2**30
        size = f" (tried to allocate {n:.1f} GiB)" if n < 1024 else f" (tried to allocate {n / 1024:,.0f} TiB)"
    elif (m := re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text)):
        size = f" (tried to allocate {m.group(1)})"
    return ResourceError(f"out of memory on {where}{size}; lower model.hidden_size, data.samples or "
                         "data.batch_size")
