"""Whether this process was started by torchrun, and its rank. No torch here (the CLI asks first)."""

from __future__ import annotations

import os


def under_torchrun() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
