"""Checkpoints: a plain dict saved atomically, read back only with ``weights_only=True``.

A checkpoint is untrusted input even so: ``torch.load`` runs no code, but it allocates whatever the
archive declares and returns any structure of tensors and plain values, and a state tensor of the
wrong shape or layout crashes the optimizers' fused kernels. So the archive's declared sizes are
checked before reading (:func:`checkpoint_size_check`), the whole structure after it
(:func:`structure_problems`), and every optimizer state tensor against its parameter before the
optimizer sees it (:func:`load_optimizer`). Every refusal is one CheckpointError line.

The structure checks live in io/checkpoint_checks.py; resuming a run from one in runs/resume.py.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from backprop_cli.errors import CheckpointError
from backprop_cli.io.atomic import AtomicFile
from backprop_cli.io.safetensors_file import is_safetensors
from backprop_cli.io.checkpoint_checks import (CHECKPOINT_VERSION, REQUIRED_KEYS, first_line, merged_groups,
                                               optimizer_state_problem, structure_problems)
from backprop_cli.io.files import open_regular
from backprop_cli.io.paths import check_writable
from backprop_cli.io.signals import deferred

# What an archive may declare before torch.load reads it (torch.save stores, never compresses).
MAX_MEMBERS = 4096  # one per tensor: a few dozen in a backprop checkpoint


MAX_PICKLE_BYTES = 4 * 2**20  # data.pkl: the structure and the config (a few KB in practice)


MAX_COMPRESSION = 4  # declared bytes per byte of file


DEFAULT_MAX_BYTES = 2 * 2**30  # without the model's size: 2 GiB


MAX_OPTIMIZER_BUFFERS = 3  # per parameter: Adam with amsgrad, centered RMSprop with momentum


SLACK_BYTES = 16 * 2**20  # config, RNG states, step counters, pickle


def expected_checkpoint_bytes(params: int) -> int:
    """The most a checkpoint of a model with ``params`` parameters needs: the weights and up to
    MAX_OPTIMIZER_BUFFERS optimizer buffers per value, 8 bytes each (float64 at most), twice (``best``, the
    restore_best copy of the best evaluation's state, is a second one), plus slack."""
    return 2 * (1 + MAX_OPTIMIZER_BUFFERS) * int(params) * 8 + SLACK_BYTES


def rng_state(device: torch.device, next_batch: int) -> dict:
    """torch's CPU RNG, the CUDA RNGs where CUDA is used, and the data order position."""
    state = {"torch": torch.get_rng_state(), "data": {"next_batch": int(next_batch)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, path: Path | str = "checkpoint") -> None:
    """Put back the RNG states of a checkpoint that :func:`load_checkpoint` accepted (which tried
    ``rng.torch`` on a spare generator, so setting it cannot fail); ``path`` names it in errors."""
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(rng["cuda"])
        except (RuntimeError, IndexError) as e:
            raise CheckpointError(f"{path}: rng.cuda: not CUDA RNG states this machine can use "
                                  f"({first_line(e)})") from None


def save_checkpoint(path: Path, *, model, optimizer, step: int, config: dict, scheduler=None,
                    device: torch.device | None = None, data: dict | None = None,
                    evaluation: dict | None = None, best: tuple | None = None) -> None:
    """Write ``{"model", "optimizer", "scheduler", "step", "config", "rng", "version"}`` atomically
    (temp file in the same folder, flush, fsync, ``os.replace``); a failure (disk full) is one
    OutputError and leaves the previous file. ``data`` (data.Table.info(): the columns, class names,
    scaling and split) is written too when given, and ``evaluation`` (runs.sinks.EvaluationSink.state():
    the best val_loss, its step, early stopping's reference and counter) likewise. ``best``: with
    ``restore_best``, the (model, optimizer, scheduler) state of the best evaluation, so that a resumed run
    can still put that model back at its end."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "step": int(step), "config": config,
             "rng": rng_state(device or torch.device("cpu"), step), "version": CHECKPOINT_VERSION}
    if data is not None:
        state["data"] = data
    if evaluation is not None:  # a resumed run goes on from them (--save-best, early stopping)
        state["evaluation"] = evaluation
    if best is not None:  # restore_best: the best evaluation's state, for a resumed run to put back
        state["best"] = {"model": best[0], "optimizer": best[1], "scheduler": best[2]}
    check_writable(Path(path), what="checkpoint")
    with deferred(), AtomicFile(Path(path), "wb") as f:  # Ctrl-C waits until the checkpoint is in place
        torch.save(state, f.file)


def last_good_path(path: Path) -> Path:
    """Where a failed run writes its last good state when ``path`` exists: ``<stem>.last-good<suffix>``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.last-good{path.suffix}")


def checkpoint_size_check(path: Path, expected_bytes: int | None = None) -> None:
    """Refuse, before anything is read, an archive that declares more data than a checkpoint can hold.

    torch.load allocates what the zip archive's directory declares, so a small deflated file can
    ask for gigabytes. Refused: a file that is not a zip archive (torch.save writes nothing else),
    more than MAX_MEMBERS members, a data.pkl over MAX_PICKLE_BYTES, declared sizes adding up to
    more than ``expected_bytes`` (default DEFAULT_MAX_BYTES; see expected_checkpoint_bytes) or to
    more than MAX_COMPRESSION times the file's size.
    """
    path = Path(path)
    with open_regular(path, "checkpoint file", CheckpointError) as f:
        if is_safetensors(path):
            raise CheckpointError(f"{path}: a safetensors file of backprop export holds the weights only (no "
                                  "optimizer or RNG state); give the checkpoint of train --save it came from")
        _check_archive(f, path, expected_bytes)


def _check_archive(f: BinaryIO, path: Path, expected_bytes: int | None) -> None:
    try:
        size = os.fstat(f.fileno()).st_size
        with zipfile.ZipFile(f) as archive:
            members = archive.infolist()
    except Exception:  # noqa: BLE001 - BadZipFile, EOFError, struct.error, ...: all "not an archive"
        raise CheckpointError(f"{path}: not a readable checkpoint (not the zip archive torch.save writes; "
                              "truncated or corrupt)") from None
    refused = f"{path}: refused: the archive declares"
    if len(members) > MAX_MEMBERS:
        raise CheckpointError(f"{refused} {len(members):,} entries (a checkpoint has at most {MAX_MEMBERS:,})")
    pickled = sum(m.file_size for m in members if m.filename.endswith("data.pkl"))
    if pickled > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{refused} {pickled:,} bytes of structure in data.pkl "
                              f"(a checkpoint needs at most {MAX_PICKLE_BYTES:,})")
    declared, limit = sum(m.file_size for m in members), expected_bytes or DEFAULT_MAX_BYTES
    if declared > limit:
        raise CheckpointError(f"{refused} {declared:,} bytes of data, more than the {limit:,} "
                              + ("a checkpoint of this model can hold" if expected_bytes else "a checkpoint may hold"))
    if declared > MAX_COMPRESSION * size:
        raise CheckpointError(f"{refused} {declared:,} bytes of data in a {size:,}-byte file (torch.save "
                              "does not compress: a zip bomb?)")


def load_checkpoint(path: Path, map_location: Any = "cpu", expected_params: int | None = None) -> dict:
    """Load with ``weights_only=True`` and check everything in it; any problem is one CheckpointError.

    ``expected_params``, the number of parameters of the model the checkpoint is for, bounds the
    bytes the archive may declare (expected_checkpoint_bytes); without it the bound is
    DEFAULT_MAX_BYTES. The file must be a regular file (a FIFO or device is refused unread).
    """
    path = Path(path)
    with open_regular(path, "checkpoint file", CheckpointError) as f:
        if is_safetensors(path):
            raise CheckpointError(f"{path}: a safetensors file of backprop export holds the weights only (no "
                                  "optimizer or RNG state); give the checkpoint of train --save it came from")
        _check_archive(f, path, None if expected_params is None else expected_checkpoint_bytes(expected_params))
        f.seek(0)
        try:
            state = torch.load(f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path}: {_unpickling_problem(str(e))}") from None
        except RecursionError:
            raise CheckpointError(f"{path}: refused: the checkpoint is nested too deeply") from None
        except Exception as e:  # noqa: BLE001 - weights_only runs no code: any failure is a bad file
            text = str(e).strip() if isinstance(e, (RuntimeError, EOFError, ValueError, OSError)) else ""
            first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
            raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save file, truncated or "
                                  f"corrupt: {first[:120]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a backprop checkpoint (expected a dict, got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a backprop checkpoint (missing keys: {', '.join(missing)})")
    problems = structure_problems(state)
    best = state.get("best")
    if best is not None:  # the same checks, on the best evaluation's state in the place of the last one's
        if not (isinstance(best, dict) and set(best) == {"model", "optimizer", "scheduler"}):
            problems.append("best: expected a mapping of model, optimizer, scheduler (restore_best's copy)")
        else:
            problems += [f"best.{p}" for p in structure_problems({**state, **best, "best": None})]
    if problems:
        raise CheckpointError(f"{path}: not a valid backprop checkpoint: {'; '.join(problems)}")
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


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, path: Path) -> None:
    """Load a checkpoint's optimizer state, keeping this run's implementation (fused/foreach).

    Which kernel runs is a property of the device and of this version of backprop, not of the
    checkpoint: a checkpoint written with the for-loop kernels resumes with the fused ones (and a CPU
    one on CUDA, where Adagrad has no fused kernel), with its step counters placed where they need to be.

    Before torch sees it, every state entry is checked against its parameter (see
    :func:`optimizer_state_problem`): a buffer of the wrong shape would crash the fused kernels.
    A hyperparameter the checkpoint lacks takes this optimizer's value.
    """
    saved = state["optimizer"]
    problem = optimizer_state_problem(optimizer, saved)
    if problem is not None:
        raise CheckpointError(f"{path}: optimizer state does not fit the config's optimizer: {problem}")
    try:
        optimizer.load_state_dict({**saved, "param_groups": merged_groups(optimizer, saved["param_groups"])})
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit the config's optimizer ({e})") from None


