"""``--detect-anomaly``: torch's anomaly mode, reduced to one error line."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Optional


class AnomalyMode:
    """``torch.autograd.detect_anomaly(check_nan=True)`` without its two long warnings on stderr.

    torch warns that the mode is on (the start panel says so instead) and, when a backward function
    returns NaN, prints the whole traceback of the forward call that made it; that traceback is kept
    here and reduced to its last frame outside torch (the line of the model that ran the operation).
    Other warnings pass through untouched.
    """

    ENABLED = "Anomaly Detection has been enabled"
    DETECTED = "Error detected in"
    FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]+\n\s+(.+)')

    def __init__(self):
        self.forward_traces: list[str] = []

    def __enter__(self):
        import torch

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("always", message=self.DETECTED)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if text.startswith(self.DETECTED):
                self.forward_traces.append(text)
            elif not text.startswith(self.ENABLED):
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        self._mode = torch.autograd.detect_anomaly(check_nan=True)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._warnings.__exit__(*exc)
        return False

    def nonfinite(self, error: BaseException) -> Optional[str]:
        """The one-line description of an anomaly-mode NaN error, or None for any other error."""
        if isinstance(error, RuntimeError) and "nan values" in str(error):
            return self.describe(error)
        return None

    def describe(self, error: BaseException) -> str:
        """torch's first error line, and where the forward made the operation (when torch said)."""
        text = str(error).strip()
        first = text.splitlines()[0].rstrip(".") if text else "anomaly detected"
        if not self.forward_traces:
            return first
        torch_dir = os.sep + "torch" + os.sep
        frames = [f for f in self.FRAME.findall(self.forward_traces[-1]) if torch_dir not in f[0]]
        if not frames:
            return first
        path, line, code = frames[-1]
        return f"{first}; the forward ran it at {Path(path).name}:{line}: {code.strip()}"
