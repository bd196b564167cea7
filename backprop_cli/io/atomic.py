"""Output files that are never half-written: temp file in the same folder, fsync, os.replace.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from backprop_cli.errors import OutputError
from backprop_cli.io.paths import refuse_special, target
from backprop_cli.io.signals import deferred, forget, remove_on_interrupt


def _mode_for(path: Path) -> int:
    """The existing file's permissions, else what a plain open() would give (0o666 less the umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class AtomicFile:
    """A file written under a temporary name and renamed over ``path`` on :meth:`commit`.

    :meth:`discard` (or an exception inside ``with``) leaves the previous file untouched and no
    temporary file behind. Any OSError while creating, writing, flushing, fsyncing or renaming is an
    OutputError naming the path and the cause (``m.jsonl: cannot write: No space left on device``),
    also when a library (torch.save's zip writer) hides the OSError behind an error of its own. A
    symlink is written through (its target is replaced, the link kept); a path that is not a regular
    file (a device, FIFO or socket) is never replaced.
    """

    def __init__(self, path: Path, mode: str = "w"):
        self.path = Path(path)
        self.done = False
        self.target = target(self.path)
        refuse_special(self.path)
        with deferred():  # an interrupted process removes the temporary file (signals.py)
            try:
                fd, self.tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp",
                                                dir=self.target.parent)
            except OSError as e:
                raise self._error(e) from None
            remove_on_interrupt(self.tmp)
            try:
                os.chmod(self.tmp, _mode_for(self.target))
                raw = os.fdopen(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {}))
            except OSError as e:
                os.close(fd)
                os.unlink(self.tmp)
                forget(self.tmp)
                raise self._error(e) from None
            self.file: IO = _Recording(raw)

    def _error(self, e: OSError) -> OutputError:
        return OutputError(f"{self.path}: cannot write: {e.strerror or e}")

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        with deferred():  # a signal now waits until the file is in place, or removed
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                refuse_special(self.path)  # it may have become one while we wrote
                os.replace(self.tmp, self.target)
                forget(self.tmp)
            except OSError as e:
                self._cleanup()
                raise self._error(e) from None
            except BaseException:
                self._cleanup()
                raise

    def discard(self) -> None:
        if not self.done:
            self.done = True
            self._cleanup()

    def _cleanup(self) -> None:
        with deferred():
            try:
                self.file.close()
            except OSError:
                pass  # the buffered rest could not be written: the file is being removed anyway
            finally:
                if os.path.exists(self.tmp):
                    os.unlink(self.tmp)
                forget(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        cause = self.file.error or (exc if isinstance(exc, OSError) else None)
        if cause is not None and isinstance(exc, Exception) and not isinstance(exc, OutputError):
            raise self._error(cause) from None


class _Recording:
    """A file that remembers the first OSError its writes met: torch.save's zip writer (and other
    libraries) turn a failed write into an error of their own ("unexpected pos ..."), which does
    not tell the user that the disk is full."""

    def __init__(self, file: IO):
        self._file = file
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def write_atomic(path: Path, write: Callable[[IO], None], mode: str = "w") -> None:
    """Write a whole file with ``write(f)``; the previous file survives any failure."""
    with AtomicFile(path, mode) as f:
        write(f.file)
