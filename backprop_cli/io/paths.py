"""Where outputs may go: checked before any work, never onto an input, a special file or another output.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backprop_cli.errors import OutputError
from backprop_cli.io.files import file_kind

METRICS_SUFFIXES = (".jsonl", ".csv")


DUMP_SUFFIXES = (".pt", ".npz", ".json")  # inspect-grads --out


PLOT_SUFFIXES = (".png", ".svg")


# Each file option of the CLI: (the suffixes it may end in, or None; what it is called in messages)
OUTPUT_KINDS = {"--metrics": (METRICS_SUFFIXES, "metrics"), "--save": (None, "checkpoint"),
                "--save-best": (None, "checkpoint"), "--plot": (PLOT_SUFFIXES, "plot"),
                "--out": (DUMP_SUFFIXES, "gradient dump")}


def check_writable(path: Path, suffixes: tuple[str, ...] | None = None, what: str = "output") -> Path:
    """Fail early (before any work) if ``path`` cannot be written or has the wrong extension.

    An output is a regular file or a new path: a directory, FIFO, device or socket (or a symlink to
    one) is refused, never replaced.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: {what} file must end in {' or '.join(suffixes)} (got {path.suffix or 'no extension'!r})")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    refuse_special(path, what)
    parent = target(path).parent
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: folder {str(parent)!r} is not writable")
    return path


def check_folder(path: Path, what: str = "output folder") -> Path:
    """Fail early if ``path`` cannot be the folder of an output: an existing file (or device), or a
    path whose nearest existing folder cannot be written."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise OutputError(f"{path}: is {kind}, not a folder; the {what} must be a folder or a new path")
    existing = path if mode is not None else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"{path}: cannot create the {what} under {str(existing)!r}")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{path}: folder {str(existing)!r} is not writable")
    return path


def refuse_special(path: Path, what: str = "output") -> None:
    """Raise OutputError if ``path`` exists and is not a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # a new path (or a dangling symlink: its target is written as a regular file)
    except OSError as e:  # a symlink loop, a folder we may not search, ...
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path}: is {file_kind(mode)}, not a regular file; the {what} is written only to "
                          "a regular file or a new path")


def target(path: Path) -> Path:
    """Where writing ``path`` lands: a symlink's target (the link itself is kept), else the path."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse (OutputError, exit 2) an output that is the same file as an input or as another output.

    Keys name the role as the user gave it (``"--save"``, ``"--config"``, ``"data.path"``); ``None``
    values are skipped. Paths are compared resolved (symlinks and ``..`` followed), and by inode where
    both exist (hard links): ``--save s.yaml: is the same file as --config s.yaml; choose another path``.
    Call it before any work.
    """
    seen: list[tuple[str, Path]] = [(role, Path(p)) for role, p in inputs.items() if p is not None]
    for role, p in outputs.items():
        if p is None:
            continue
        for other_role, other in seen:
            if _same_file(Path(p), other):
                raise OutputError(f"{role} {p}: is the same file as {other_role} {other}; choose another path")
        seen.append((role, Path(p)))


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
