"""A model's weights as a safetensors file (no pickle) with what predict needs as JSON in its header.

The header's ``__metadata__`` holds two strings: ``format: backprop`` and ``backprop``, the JSON of
``{"version", "step", "task", "config", "data"}`` (``data`` as a checkpoint carries it: feature and target
columns, class names, scaling, the encoding with its categories and fill values). The tensors are the
model's ``state_dict`` under the checkpoint's names (``layer1.weight``, ...). What it lacks against a
checkpoint: the optimizer state, the scheduler state and the RNG state (so ``train --resume`` refuses it).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from backprop_cli.errors import CheckpointError
from backprop_cli.io.atomic import write_atomic
from backprop_cli.io.checkpoint_checks import CHECKPOINT_VERSION, structure_problems
from backprop_cli.io.files import open_regular

MAGIC_KEY = "format"
MAGIC = "backprop"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own bound on the JSON header
MAX_BYTES = 8 * 2**30


def metadata(state: dict, task: str) -> dict[str, str]:
    """The header's ``__metadata__`` for a loaded checkpoint ``state`` of a model for ``task``
    (config.task_of: classes, binary or regression)."""
    doc = {"version": CHECKPOINT_VERSION, "step": int(state["step"]), "task": task,
           "config": state["config"], "data": state.get("data")}
    return {MAGIC_KEY: MAGIC, MAGIC: json.dumps(doc, sort_keys=True, allow_nan=False)}


def save_safetensors(path: Path, tensors: dict, meta: dict[str, str]) -> None:
    """Write ``tensors`` (name → CPU tensor) and ``meta`` atomically."""
    from safetensors.torch import save

    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
    write_atomic(path, lambda f: f.write(blob), "wb")


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does: an 8-byte header length, then ``{``."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES


def load_safetensors(path: Path) -> dict:
    """The file as a checkpoint-shaped dict (``model``, ``step``, ``config``, ``data``; an empty optimizer),
    after the checkpoint loader's structure checks; every problem is one CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    with open_regular(path, "checkpoint file", CheckpointError) as f:
        size = f.seek(0, 2)
        if size > MAX_BYTES:
            raise CheckpointError(f"{path}: refused: {size:,} bytes, more than the {MAX_BYTES:,} a model file may "
                                  "hold")
        f.seek(0)
        blob = f.read()
    try:
        n = struct.unpack("<Q", blob[:8])[0]
        if n > MAX_HEADER_BYTES or 8 + n > len(blob):
            raise ValueError("header length beyond the file")
        header = json.loads(blob[8:8 + n])
        tensors = load(blob)
    except (ValueError, struct.error, SafetensorError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get(MAGIC_KEY) != MAGIC or not isinstance(meta.get(MAGIC), str):
        raise CheckpointError(f"{path}: a safetensors file, but not one backprop export wrote (its header has no "
                              "format: backprop metadata)")
    try:
        doc = json.loads(meta[MAGIC])
    except ValueError as e:
        raise CheckpointError(f"{path}: the backprop metadata is not JSON ({e})") from None
    if not isinstance(doc, dict) or any(k not in doc for k in ("step", "config", "data")):
        raise CheckpointError(f"{path}: the backprop metadata lacks step, config or data")
    state: dict[str, Any] = {"model": tensors, "optimizer": {"state": {}, "param_groups": []},
                             "step": doc["step"], "config": doc["config"], "data": doc["data"],
                             "version": doc.get("version", CHECKPOINT_VERSION)}
    problems = structure_problems(state)
    if problems:
        raise CheckpointError(f"{path}: not a valid backprop model file: {'; '.join(problems)}")
    return state
