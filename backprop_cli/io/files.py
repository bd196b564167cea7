"""Reading the files a user names: regular files only, read with a cap on the bytes actually read.

A path may name anything: a FIFO (``open`` would wait for a writer for ever), ``/dev/zero`` or
``/dev/urandom`` (endless), a directory, a dangling symlink or a symlink loop. :func:`open_regular`
refuses all of these before reading a byte, and :func:`read_text_capped` never reads more than its
limit (``st_size`` is not trusted: it is 0 for ``/dev/zero``). Every problem is one line, raised as
the error class the caller passes (ConfigError, DataError, CheckpointError, ...). No torch here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from backprop_cli.errors import BackpropError, ConfigError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What ``st_mode`` describes, in words ("a FIFO (named pipe)", "a directory", ...)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refuse(path: Path, mode: int, what: str, error: type[BackpropError]) -> None:
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {file_kind(mode)}, not a regular file; the {what} must be a regular file")


def _os_problem(path: Path, e: OSError) -> str:
    """One line for an OSError met while opening ``path`` (symlinks followed)."""
    if e.errno == errno.ENOENT and os.path.islink(path):
        return f"{path}: is a symlink to {os.readlink(path)!r}, which does not exist"
    if e.errno == errno.ELOOP:
        return f"{path}: symlink loop (too many levels of symbolic links)"
    if e.errno == errno.EACCES:
        return f"{path}: permission denied"
    return f"{path}: cannot read: {e.strerror or e}"


def open_regular(path: str | Path, what: str = "file", error: type[BackpropError] = ConfigError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symlinks are followed); else raise
    ``error`` with one line: no such file, dangling symlink (naming its target), symlink loop, a
    directory, a FIFO, a device or a socket. ``what`` names the file in messages ("config file").

    The file is checked with ``stat`` before opening, opened with ``O_NONBLOCK`` (a FIFO swapped in
    meanwhile cannot block) and checked again with ``fstat`` on what was actually opened.
    """
    path = Path(path)
    try:
        _refuse(path, os.stat(path).st_mode, what, error)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        if os.path.islink(path):
            raise error(_os_problem(path, e)) from None
        raise error(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(_os_problem(path, e)) from None
    try:
        _refuse(path, os.fstat(fd).st_mode, what, error)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes_capped(path: str | Path, limit_bytes: int, what: str = "file",
                      error: type[BackpropError] = ConfigError) -> bytes:
    """The bytes of a regular file of at most ``limit_bytes`` bytes (more is an ``error``: at most
    ``limit_bytes + 1`` bytes are read, whatever the file claims its size is)."""
    with open_regular(path, what, error) as f:
        try:
            data = f.read(limit_bytes + 1)
        except OSError as e:
            raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > limit_bytes:
        raise error(f"{path}: {what} is too large (more than {limit_bytes:,} bytes)")
    return data


def read_text_capped(path: str | Path, limit_bytes: int, what: str = "file",
                     error: type[BackpropError] = ConfigError) -> str:
    """The UTF-8 text of a regular file of at most ``limit_bytes`` bytes, without a leading BOM.

    Undecodable bytes are one ``error`` line naming the byte offset; see :func:`open_regular` for
    the files that are refused before reading.
    """
    data = read_bytes_capped(path, limit_bytes, what, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return text[1:] if text.startswith("\ufeff") else text
