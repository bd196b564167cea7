"""Ctrl-C and SIGTERM. No torch here: :func:`install` runs before anything heavy is imported.

- From the start of the command (:func:`install`, called first by the ``backprop`` entry points):
  SIGINT or SIGTERM ends the process at once with one line, ``error: interrupted`` (``... by
  SIGTERM``), exit 130. Nothing is raised into the code that was running: a KeyboardInterrupt in the
  middle of ``import torch`` left a half-imported torch ("partially initialized module") or reached
  a pybind11 callback in C++ (``terminate called``, exit 134). The temporary files of outputs being
  written (:func:`remove_on_interrupt`) are removed first; the files they would replace are untouched.
- While ``train`` runs its steps (:func:`stop_on_signals`): finish the current step, then stop
  cleanly (write the outputs, exit 130); a second Ctrl-C ends the process at once as above.
- While a file is being put in place (:func:`deferred`: a checkpoint being saved, a temporary file
  being created, renamed or removed) a signal waits until that is done, then acts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from backprop_cli.errors import EXIT_INTERRUPTED

_installed = False  # install() ran: this process is the backprop command, not a library user
_deferring = 0  # depth of deferred() blocks
_pending: Optional[int] = None  # a signal that arrived during one
_temp_files: set[str] = set()  # removed before an interrupted process exits
_on_exit: list[Callable[[], None]] = []  # other cleanups (a spinner that hides the cursor)


def install() -> None:
    """SIGINT and SIGTERM end the command at once (see the module's doc). Main thread only."""
    global _installed
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, interrupt)
        _installed = True


def leaving() -> None:
    """The command is over (its files written, its exit code chosen): SIGINT and SIGTERM are ignored
    from here on. Python restores the default handlers while it shuts down (torch's takes a second),
    and a Ctrl-C then would end the process by the signal (exit -2) instead of its own exit code."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def interrupt(signum: int, frame=None) -> None:
    """The handler of :func:`install`: exit 130 now, or when the deferred block running ends. (In a
    process that did not :func:`install`, a library user's, it raises KeyboardInterrupt instead.)"""
    global _pending
    if _deferring:
        _pending = signum
        return
    _act(signum)


def _act(signum: int) -> None:
    if not _installed:
        raise KeyboardInterrupt
    exit_interrupted(signum)


def exit_interrupted(signum: int = signal.SIGINT) -> None:
    """Remove the temporary files of outputs being written, say ``error: interrupted``, exit 130."""
    for cleanup in list(_on_exit):
        try:
            cleanup()
        except BaseException:  # noqa: BLE001 - leaving anyway
            pass
    for path in list(_temp_files):
        try:
            os.unlink(path)
        except OSError:
            pass
    from backprop_cli.torchrun import rank  # tiny, no torch; under torchrun rank 0 speaks for all

    if rank() == 0:
        how = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001 - a closed pipe: leaving anyway
            pass
        try:
            sys.stderr.write(f"error: interrupted{how}\n")
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal during this block acts when it ends: a file being put in place is finished (or its
    temporary file removed) first. Blocks nest; only the outermost acts."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _act(signum)


def remove_on_interrupt(path: str) -> None:
    """Remove ``path`` (a temporary file) if the process is interrupted before :func:`forget` is called."""
    _temp_files.add(str(path))


def forget(path: str) -> None:
    _temp_files.discard(str(path))


def on_interrupt(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run ``cleanup`` before an interrupted process exits; returns a function that unregisters it."""
    _on_exit.append(cleanup)
    return lambda: _on_exit.remove(cleanup) if cleanup in _on_exit else None


class StopRequest:
    """Set by SIGINT/SIGTERM: finish the current step, then stop. A second SIGINT ends the process
    (:func:`interrupt`: at once, or when the file being saved is in place)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def __call__(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "signal"

    def handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            interrupt(signum, frame)
            return
        self.signal = signum


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
