"""Checkpoints: a plain dict saved atomically, read back only with ``weights_only=True``.

A checkpoint is untrusted input even so: ``torch.load`` runs no code, but it allocates whatever the
archive declares and returns any structure of tensors and plain values, and a state tensor of the
wrong shape or layout crashes the optimizers' fused kernels. So the archive's declared sizes are
checked before reading (:func:`checkpoint_size_check`), the whole structure after it
(:func:`structure_problems`), and every optimizer state tensor against its parameter before the
optimizer sees it (:func:`load_optimizer`). Every refusal is one CheckpointError line.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import reprlib
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from backprop_cli.errors import CheckpointError
from backprop_cli.io.files import open_regular
from backprop_cli.io.outputs import AtomicFile, check_writable
from backprop_cli.io.signals import deferred

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "step", "config")
KNOWN_KEYS = (*REQUIRED_KEYS, "scheduler", "rng", "version", "data")  # data: since validation and scaling
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# What an archive may declare before torch.load reads it (torch.save stores, never compresses).
MAX_MEMBERS = 4096  # one per tensor: a few dozen in a backprop checkpoint
MAX_PICKLE_BYTES = 4 * 2**20  # data.pkl: the structure and the config (a few KB in practice)
MAX_COMPRESSION = 4  # declared bytes per byte of file
DEFAULT_MAX_BYTES = 2 * 2**30  # without the model's size: 2 GiB
MAX_OPTIMIZER_BUFFERS = 3  # per parameter: Adam with amsgrad, centered RMSprop with momentum
SLACK_BYTES = 16 * 2**20  # config, RNG states, step counters, pickle

# Plain data (config, scheduler state, rng.data): bounded depth and size; a cycle counts as too deep.
MAX_DEPTH = 32
MAX_VALUES = 100_000


def expected_checkpoint_bytes(params: int) -> int:
    """The most a checkpoint of a model with ``params`` parameters needs: the weights and up to
    MAX_OPTIMIZER_BUFFERS optimizer buffers per value, 8 bytes each (float64 at most), plus slack."""
    return (1 + MAX_OPTIMIZER_BUFFERS) * int(params) * 8 + SLACK_BYTES


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
                                  f"({_first_line(e)})") from None


def save_checkpoint(path: Path, *, model, optimizer, step: int, config: dict, scheduler=None,
                    device: torch.device | None = None, data: dict | None = None) -> None:
    """Write ``{"model", "optimizer", "scheduler", "step", "config", "rng", "version"}`` atomically
    (temp file in the same folder, flush, fsync, ``os.replace``); a failure (disk full) is one
    OutputError and leaves the previous file. ``data`` (data.Table.info(): the columns, class names,
    scaling and split) is written too when given."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "step": int(step), "config": config,
             "rng": rng_state(device or torch.device("cpu"), step), "version": CHECKPOINT_VERSION}
    if data is not None:
        state["data"] = data
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
    if problems:
        raise CheckpointError(f"{path}: not a valid backprop checkpoint: {'; '.join(problems)}")
    return state


def structure_problems(state: dict) -> list[str]:
    """Every place where a loaded checkpoint differs from what save_checkpoint writes (all at once):
    unknown keys, an unknown version, weights that are not dense finite float tensors, plain data
    that is not plain (or too deep, or recursive), an RNG state torch would not take, ..."""
    problems: list[str] = []

    def bad(key: str, want: str, value: Any) -> None:
        problems.append(f"{key}: expected {want} (got {_describe(value)})")

    unknown = [k for k in state if not (isinstance(k, str) and k in KNOWN_KEYS)]
    if unknown:
        problems.append(f"unknown keys: {', '.join(_REPR.repr(k) for k in unknown[:5])} "
                        f"(a checkpoint has {', '.join(KNOWN_KEYS)})")
    version = state.get("version", CHECKPOINT_VERSION)
    if not (_is_int(version) and version == CHECKPOINT_VERSION):
        bad("version", f"{CHECKPOINT_VERSION} (this version of backprop reads no other)", version)
    model = state["model"]
    if not isinstance(model, dict):
        bad("model", "a mapping of parameter names to tensors", model)
    else:
        for name, value in model.items():
            if isinstance(name, str) and name.endswith(".num_batches_tracked"):  # batch norm's step counter
                if not (_dense(value) and value.dtype == torch.int64 and value.dim() == 0 and int(value) >= 0):
                    bad(f"model.{_name(name)}", "a count (a 0-d int64 tensor, at least 0)", value)
                continue
            if not isinstance(name, str) or not _dense_float(value):
                bad(f"model.{_name(name)}", "a dense float tensor", value)
            elif not bool(torch.isfinite(value).all()):
                problems.append(f"model.{_name(name)}: holds non-finite values (nan or inf)")
    opt = state["optimizer"]
    if not isinstance(opt, dict):
        bad("optimizer", "an optimizer state dict", opt)
    else:
        if not isinstance(opt.get("state"), dict):
            bad("optimizer.state", "a mapping", opt.get("state"))
        groups = opt.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                   for g in groups):
            bad("optimizer.param_groups", "a list of parameter groups", groups)
    if state.get("scheduler") is not None:
        sched = state["scheduler"]
        if not isinstance(sched, dict):
            bad("scheduler", "a scheduler state dict or null", sched)
        elif (problem := _plain_problem(sched)) is not None:
            problems.append(f"scheduler: {problem}")
        else:
            for key in ("last_epoch", "_step_count"):
                if key in sched and not _is_int(sched[key]):
                    bad(f"scheduler.{key}", "an integer", sched[key])
            for key in ("_last_lr", "base_lrs"):
                if key in sched and not (isinstance(sched[key], list) and all(map(_number, sched[key]))):
                    bad(f"scheduler.{key}", "a list of finite numbers", sched[key])
    if not _is_int(state["step"]) or state["step"] < 0:
        bad("step", "an integer ≥ 0", state["step"])
    config = state["config"]
    if not isinstance(config, dict):
        bad("config", "a mapping of plain values (as in the YAML)", config)
    elif (problem := _plain_problem(config)) is not None:
        problems.append(f"config: {problem}")
    else:
        problems += _config_problems(config)
    if state.get("data") is not None:
        problems += data_problems(state["data"])
    rng = state.get("rng")
    if rng is not None:
        if not isinstance(rng, dict):
            bad("rng", "a mapping", rng)
        else:
            if "torch" in rng and (problem := _cpu_rng_problem(rng["torch"])) is not None:
                problems.append(f"rng.torch: {problem}")
            if "cuda" in rng and not (isinstance(rng["cuda"], list) and all(map(_byte_tensor, rng["cuda"]))):
                bad("rng.cuda", "a list of uint8 tensors", rng["cuda"])
            if (problem := _plain_problem(rng.get("data"))) is not None:
                problems.append(f"rng.data: {problem}")
    return problems


def data_problems(data: Any) -> list[str]:
    """The ``data`` entry (written since checkpoints carry scaling and class names; older ones have none):
    ``features`` and ``targets`` lists of names, ``classes`` a list of names or null, ``x_scaling`` and
    ``y_scaling`` null or ``{"mean", "std"}`` lists of finite numbers (std > 0) as long as the columns,
    ``split`` null or a mapping of plain values."""
    import math

    if not isinstance(data, dict):
        return [f"data: expected a mapping (got {_describe(data)})"]
    if (problem := _plain_problem(data)) is not None:
        return [f"data: {problem}"]
    problems = []
    names = {}
    for key in ("features", "targets"):
        v = data.get(key)
        if not (isinstance(v, list) and v and all(isinstance(n, str) for n in v)):
            problems.append(f"data.{key}: expected a list of column names (got {_describe(v)})")
        else:
            names[key] = v
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and len(classes) >= 2
                                    and all(isinstance(n, str) for n in classes)
                                    and len(set(classes)) == len(classes)):
        problems.append(f"data.classes: expected null or a list of distinct class names (got {_describe(classes)})")
    for key, cols in (("x_scaling", "features"), ("y_scaling", "targets")):
        sc = data.get(key)
        if sc is None:
            continue
        width = len(names.get(cols, []))
        ok = isinstance(sc, dict) and all(
            isinstance(sc.get(k), list) and len(sc[k]) == width
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in sc[k])
            for k in ("mean", "std"))
        if ok and any(v <= 0 for v in sc["std"]):
            ok = False
        if not ok:
            problems.append(f"data.{key}: expected null or {{mean, std}}: lists of {width} finite numbers, std > 0 "
                            f"(got {_describe(sc)})")
    split = data.get("split")
    if split is not None and not isinstance(split, dict):
        problems.append(f"data.split: expected null or a mapping of plain values (got {_describe(split)})")
    if data.get("base_dir") is not None and not isinstance(data["base_dir"], str):
        problems.append(f"data.base_dir: expected a folder name (got {_describe(data['base_dir'])})")
    extra = sorted(k for k in data if k not in ("features", "targets", "classes", "x_scaling", "y_scaling", "split",
                                                "base_dir"))
    if extra:
        problems.append(f"data: unknown key {extra[0]!r}")
    return problems


def _config_problems(config: dict) -> list[str]:
    """The parts of the saved config that --resume reads: sections that are mappings, a number lr."""
    problems = [f"config.{key}: expected a mapping (got {_describe(config[key])})"
                for key in ("model", "optimizer", "scheduler")
                if config.get(key) is not None and not isinstance(config[key], dict)]
    lr = (config.get("optimizer") or {}).get("lr") if not problems else None
    if lr is not None and not (_number(lr) and lr > 0):
        problems.append(f"config.optimizer.lr: expected a number > 0 (got {_describe(lr)})")
    return problems


def _cpu_rng_problem(value: Any) -> str | None:
    """Why torch.set_rng_state would refuse ``value`` (tried on a spare generator), else None."""
    size = len(torch.get_rng_state())
    if not (_byte_tensor(value) and value.numel() == size):
        return f"expected a uint8 tensor of {size} bytes, as torch.get_rng_state() gives (got {_describe(value)})"
    try:
        torch.Generator().set_state(value)
    except RuntimeError as e:
        return f"not a CPU RNG state torch accepts ({_first_line(e)})"
    return None


def _plain_problem(value: Any) -> str | None:
    """Why ``value`` is not plain data (mappings with string keys, lists, strings, numbers, booleans,
    None) of at most MAX_DEPTH levels and MAX_VALUES values; else None. A cycle is too deep."""
    stack, count = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"more than {MAX_VALUES:,} values"
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (or recursive)"
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return "expected string keys"
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, (list, tuple)):
            stack += [(v, depth + 1) for v in item]
        elif not (item is None or isinstance(item, (str, int, float, bool))):
            return f"expected plain values, as in the YAML (got {_describe(item)})"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """An int or a finite float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dense(value: Any) -> bool:
    """A tensor with data in ordinary strided memory: not sparse, quantized, nested or meta."""
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_quantized
            and not value.is_nested and not value.is_meta)


def _dense_float(value: Any) -> bool:
    return _dense(value) and value.dtype in FLOAT_DTYPES


def _byte_tensor(value: Any) -> bool:
    return _dense(value) and value.dtype == torch.uint8 and value.dim() == 1


class _Repr(reprlib.Repr):
    """reprlib's bounded repr (depth, length: safe on deep, recursive or huge values), with tensors
    described in one line."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 2, 40, 40

    def repr1(self, x: Any, level: int) -> str:
        return _tensor_words(x) if isinstance(x, torch.Tensor) else " ".join(super().repr1(x, level).split("\n"))


_REPR = _Repr()


def _tensor_words(value: torch.Tensor) -> str:
    kind = ("quantized " if value.is_quantized else "nested " if value.is_nested
            else "" if value.layout == torch.strided else f"{str(value.layout).removeprefix('torch.')} ")
    kind += "meta " if value.is_meta else ""
    return f"a {kind}{value.dtype} tensor of shape {list(value.shape)}"


def _name(key: Any) -> str:
    """A key as it can stand in a one-line message: as is if it is a short printable string."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else _REPR.repr(key)


def _describe(value: Any) -> str:
    """A short one-line description of any loaded value."""
    return _tensor_words(value) if isinstance(value, torch.Tensor) else f"{type(value).__name__} {_REPR.repr(value)}"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:120]


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


# How torch runs the step (kernel, graph capture, autograd through it): this run's choice, never
# the checkpoint's (capturable=True on a CPU run, say, fails at the first step).
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


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
        optimizer.load_state_dict({**saved, "param_groups": _merged_groups(optimizer, saved["param_groups"])})
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit the config's optimizer ({e})") from None


def _merged_groups(optimizer: torch.optim.Optimizer, saved_groups: list[dict]) -> list[dict]:
    """The param groups the optimizer gets: its own values, the checkpoint's over them, then this
    run's implementation keys."""
    mine = {k: optimizer.defaults[k] for k in IMPLEMENTATION_KEYS if k in optimizer.defaults}
    return [{**{k: v for k, v in ours.items() if k != "params"}, **saved, **mine}
            for ours, saved in zip(optimizer.param_groups, saved_groups)]


def optimizer_state_problem(optimizer: torch.optim.Optimizer, saved: Any) -> str | None:
    """The first way ``saved`` (an optimizer state dict) does not fit ``optimizer``, else None.

    Parameter groups: as many as the optimizer's, each with as many distinct integer ids, and
    hyperparameters of the kind the optimizer's are (a number for ``lr``, finite, ≥ 0; booleans
    for flags; as many numbers for ``betas``) with which a step runs. State: none at all, or an
    entry per parameter with every key a step keeps, under the checkpoint's hyperparameters and
    under the optimizer's own (``--resume`` applies the config's: turning on amsgrad needs
    ``max_exp_avg_sq``); each buffer a dense, contiguous float tensor of its parameter's shape;
    ``step`` a finite number ≥ 0 or a one-element float tensor.
    """
    if not (isinstance(saved, dict) and isinstance(saved.get("state"), dict)
            and isinstance(saved.get("param_groups"), list)):
        return f"expected a state dict with 'state' and 'param_groups' (got {_describe(saved)})"
    groups, ours = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(ours):
        return f"{len(groups)} parameter groups in the checkpoint, {len(ours)} in the optimizer"
    params: dict[int, torch.Tensor] = {}
    for i, (group, mine) in enumerate(zip(groups, ours)):
        if not (isinstance(group, dict) and isinstance(group.get("params"), list)):
            return f"param_groups[{i}]: expected a mapping with a 'params' list (got {_describe(group)})"
        if len(group["params"]) != len(mine["params"]):
            return f"param_groups[{i}] has {len(group['params'])} parameters, the model {len(mine['params'])}"
        for pid, param in zip(group["params"], mine["params"]):
            if not _is_int(pid) or pid in params:
                return f"param_groups[{i}].params: expected distinct integers (got {_describe(pid)})"
            params[pid] = param
        for key, value in group.items():
            if key != "params" and (problem := _hyperparameter_problem(key, value, mine)) is not None:
                return f"param_groups[{i}].{_name(key)}: {problem}"
    try:  # the keys a step needs, with the checkpoint's hyperparameters and with the config's
        needs = [a | b for a, b in zip(_state_keys(optimizer, _merged_groups(optimizer, groups)),
                                       _state_keys(optimizer, optimizer.param_groups))]
    except Exception as e:  # noqa: BLE001 - torch's own check of a combination of values
        return f"its hyperparameters cannot run a step ({_first_line(e)})"
    entries = saved["state"]
    for pid in entries:
        if not (_is_int(pid) and pid in params):
            return f"state has an entry {_REPR.repr(pid)}, which is no parameter's id"
    for (pid, param), needed in zip(params.items(), needs):
        if pid not in entries:
            if entries and needed:
                return f"state has no entry for parameter {pid} (shape {list(param.shape)})"
            continue
        entry = entries[pid]
        if not isinstance(entry, dict):
            return f"state[{pid}]: expected a mapping of tensors (got {_describe(entry)})"
        missing = sorted(needed - set(entry))
        if missing:
            return f"state[{pid}] has no {missing[0]}, which this optimizer keeps for every parameter"
        for key, value in entry.items():
            problem = _step_problem(value) if key == "step" else _buffer_problem(value, param)
            if problem is not None:
                return f"state[{pid}].{_name(key)}: {problem}"
    return None


def _hyperparameter_problem(key: Any, value: Any, mine: dict) -> str | None:
    """Whether a saved hyperparameter is of the kind the optimizer's own value is."""
    if key in IMPLEMENTATION_KEYS:
        return None  # replaced by this run's
    if not isinstance(key, str) or key not in mine:
        ok = value is None or isinstance(value, (str, bool)) or _number(value)
        return None if ok else f"expected a plain value (got {_describe(value)})"
    ours = mine[key]
    if isinstance(ours, bool) or ours is None:
        return None if isinstance(value, bool) or value is None else f"expected true or false (got {_describe(value)})"
    if isinstance(ours, (int, float)):
        ok = _number(value) and (key != "lr" or value >= 0)
        return None if ok else f"expected a finite number{' ≥ 0' if key == 'lr' else ''} (got {_describe(value)})"
    if isinstance(ours, (list, tuple)):
        ok = isinstance(value, (list, tuple)) and len(value) == len(ours) and all(map(_number, value))
        return None if ok else f"expected {len(ours)} finite numbers (got {_describe(value)})"
    return None if type(value) is type(ours) else f"expected a {type(ours).__name__} (got {_describe(value)})"


def _step_problem(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        if not (_dense_float(value) and value.numel() == 1):
            return f"expected a number or a one-element float tensor (got {_describe(value)})"
        value = value.item()
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"expected a number or a one-element float tensor (got {_describe(value)})"
    return None if math.isfinite(value) and value >= 0 else f"expected a finite count ≥ 0 (got {value})"


def _buffer_problem(value: Any, param: torch.Tensor) -> str | None:
    if not _dense_float(value):
        return f"expected a dense float tensor (got {_describe(value)})"
    if value.shape != param.shape:
        return f"has shape {list(value.shape)}, its parameter {list(param.shape)}"
    if not value.is_contiguous():
        return f"expected a contiguous tensor (got strides {list(value.stride())})"
    if value.device.type not in ("cpu", param.device.type):
        return f"is on {value.device}, its parameter on {param.device}"
    return None


def _state_keys(optimizer: torch.optim.Optimizer, groups: list[dict]) -> list[set]:
    """The state keys one step of this optimizer with the hyperparameters of ``groups`` keeps for
    each parameter (in param_groups order): learnt from a probe on one-element parameters."""
    probe = type(optimizer)([
        {**{k: v for k, v in group.items() if k != "params"},
         "params": [torch.zeros(1, dtype=p.dtype, device=p.device, requires_grad=True) for p in ours["params"]]}
        for group, ours in zip(groups, optimizer.param_groups)])
    for group in probe.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    probe.step()
    return [set(probe.state[p]) for group in probe.param_groups for p in group["params"]]


# --------------------------------------------------------------------------- resume


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """``key: old → new`` for every key that differs between two plain configs."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k, '(unset)')} → {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


# The scheduler's position (from the checkpoint); its shape (step_size, T_max, ...) comes from the config.
SCHEDULE_POSITION = ("last_epoch", "_step_count", "_last_lr", "base_lrs")


def _same_model(saved: Any, cfg) -> bool:
    from pydantic import ValidationError

    from backprop_cli.config import ModelConfig

    try:
        return ModelConfig.model_validate(saved).model_dump() == cfg.model.model_dump()
    except (ValidationError, TypeError):
        return False


def resume_from(run, path: Path) -> tuple[int, list[str]]:
    """Load weights, optimizer, scheduler and RNG state into ``run``; returns (saved step, what changed).

    A different model, optimizer or scheduler is refused; other changes (lr, steps, ...) are applied.
    """
    from backprop_cli.config import optimizer_hyperparams

    state = load_checkpoint(path, expected_params=sum(p.numel() for p in run.model.parameters()))
    saved, current = state["config"], run.cfg.plain()
    for head, key, what in (("model", None, "model"), ("optimizer", "name", "optimizer"),
                            ("scheduler", "name", "scheduler")):
        old = saved.get(head)
        if key is None:
            same = old is None or _same_model(old, run.cfg)
        else:
            old = old.get(key) if isinstance(old, dict) else old
            same = old is None or old == current[head][key]
        if not same:
            diffs = config_changes({head: saved.get(head)}, {head: current[head]})
            raise CheckpointError(f"{path}: --resume needs the same {what} as the checkpoint; "
                                  f"the config changes {'; '.join(diffs)}")
    load_weights(run.model, state, path)
    load_optimizer(run.optimizer, state, path)
    changes = config_changes(saved, current)
    if run.scheduler is not None and isinstance(state.get("scheduler"), dict):
        for key in SCHEDULE_POSITION:
            if key in state["scheduler"]:
                setattr(run.scheduler, key, state["scheduler"][key])
        if any(c.startswith(("train.steps", "train.epochs", "scheduler.")) for c in changes):
            _lr_from_schedule(run.scheduler)
    hyper = optimizer_hyperparams(run.cfg.optimizer)
    saved_lr = (saved.get("optimizer") or {}).get("lr")
    new_lr = saved_lr is not None and saved_lr != hyper["lr"]
    for group in run.optimizer.param_groups:
        old_lr = group["lr"]
        for key, value in hyper.items():
            if key != "lr":
                group[key] = value
        if new_lr:
            # a new base lr: the schedule (if any) continues from the same position, scaled
            group["lr"] = hyper["lr"] if run.scheduler is None else old_lr * hyper["lr"] / saved_lr
            if "initial_lr" in group:
                group["initial_lr"] = hyper["lr"]
    if run.scheduler is not None and new_lr:
        run.scheduler.base_lrs = [hyper["lr"] for _ in run.scheduler.base_lrs]
    _same_split(state, run, path)
    restore_rng(state, path)
    step = int(state["step"])
    if step >= run.steps:
        raise CheckpointError(f"{path}: the checkpoint is at step {step} and the run has {run.steps} steps: "
                              f"nothing to resume; raise train.steps (e.g. --steps {step + run.steps})")
    return step, changes


def _same_split(state: dict, run, path: Path) -> None:
    """A resumed run must hold out the rows the checkpoint's run held out (data.validation as a fraction)."""
    saved = (state.get("data") or {}).get("split")
    table = getattr(run.dataset, "table", None)
    mine = table.split if table is not None else None
    if not isinstance(saved, dict) or saved.get("digest") is None:
        return
    if mine is None or mine.get("digest") != saved.get("digest"):
        raise CheckpointError(f"{path}: --resume would hold out other validation rows than the checkpoint's run "
                              f"(it held out {saved.get('validation_rows')} of {saved.get('rows')} rows with seed "
                              f"{saved.get('seed')}, fraction {saved.get('validation')}); keep seed, data and "
                              "data.validation as they were")


def _lr_from_schedule(scheduler) -> None:
    """Set the optimizer's lr to what the (changed) schedule gives at the saved position."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        closed = getattr(scheduler, "_get_closed_form_lr", None)
        lrs = closed() if closed is not None else scheduler.get_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
