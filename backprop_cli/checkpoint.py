"""Checkpoints: a plain dict saved atomically, read back only with ``weights_only=True``."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from backprop_cli.errors import CheckpointError
from backprop_cli.outputs import AtomicFile, check_writable

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "step", "config")


def rng_state(device: torch.device, next_batch: int) -> dict:
    """torch's CPU RNG, the CUDA RNGs where CUDA is used, and the data order position."""
    state = {"torch": torch.get_rng_state(), "data": {"next_batch": int(next_batch)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(path: Path, *, model, optimizer, step: int, config: dict, scheduler=None,
                    device: torch.device | None = None) -> None:
    """Write ``{"model", "optimizer", "scheduler", "step", "config", "rng", "version"}`` atomically
    (temp file in the same folder, flush, fsync, ``os.replace``)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "step": int(step), "config": config,
             "rng": rng_state(device or torch.device("cpu"), step), "version": CHECKPOINT_VERSION}
    check_writable(Path(path), what="checkpoint")
    with AtomicFile(Path(path), "wb") as f:
        torch.save(state, f.file)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Load with ``weights_only=True``; anything else (pickled code, corruption) is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {_unpickling_problem(str(e))}") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {first[:120]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a backprop checkpoint (expected a dict, got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a backprop checkpoint (missing keys: {', '.join(missing)})")
    return state


def _unpickling_problem(text: str) -> str:
    """One line out of torch's long weights_only error."""
    match = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+)", text)
    if match:
        return (f"refused: the file holds pickled Python objects ({match.group(1)}), not just tensors; "
                "it is not loaded (weights_only=True)")
    return "not a readable checkpoint (not a torch.save file, or corrupt)"


def load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Copy a checkpoint's weights into ``model``, naming the first tensor whose shape differs."""
    theirs = state["model"]
    ours = model.state_dict()
    for name, tensor in ours.items():
        if name not in theirs:
            raise CheckpointError(f"{path}: checkpoint has no {name!r}; it was saved for a different model (e.g. model.bias)")
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: {name} has shape {list(theirs[name].shape)} in the checkpoint but "
                                  f"{list(tensor.shape)} in the config's model")
    extra = sorted(set(theirs) - set(ours))
    if extra:
        raise CheckpointError(f"{path}: checkpoint has {extra[0]!r}, which the config's model lacks (e.g. model.bias)")
    model.load_state_dict(theirs)


IMPLEMENTATION_KEYS = ("fused", "foreach")


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, path: Path) -> None:
    """Load a checkpoint's optimizer state, keeping this run's implementation (fused/foreach).

    Which kernel runs is a property of the device and of this version of backprop, not of the
    checkpoint: a checkpoint written with the for-loop kernels resumes with the fused ones (and a CPU
    one on CUDA, where Adagrad has no fused kernel), with its step counters placed where they need to be.
    """
    saved = state["optimizer"]
    mine = {k: optimizer.defaults[k] for k in IMPLEMENTATION_KEYS if k in optimizer.defaults}
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if isinstance(groups, list) and all(isinstance(g, dict) for g in groups):
        saved = {**saved, "param_groups": [{**g, **mine} for g in groups]}
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit the config's optimizer ({e})") from None
