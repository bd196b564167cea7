"""Checkpoints: a plain dict saved atomically, read back only with ``weights_only=True``."""

from __future__ import annotations

import pickle
import re
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
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except Exception as e:  # noqa: BLE001 - weights_only runs no code: any failure is a bad file
        # A file that is not a torch.save archive goes to the legacy unpickler, which fails in many
        # ways (IndexError, KeyError, struct.error, UnicodeDecodeError, ...): all are "corrupt".
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
    """Every place where a loaded checkpoint differs from what save_checkpoint writes (all at once)."""
    problems: list[str] = []

    def bad(key: str, want: str, value: Any) -> None:
        problems.append(f"{key}: expected {want} (got {_describe(value)})")

    model = state["model"]
    if not isinstance(model, dict):
        bad("model", "a mapping of parameter names to tensors", model)
    else:
        for name, value in model.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                bad(f"model.{name}", "a tensor", value)
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
        else:
            for key in ("last_epoch", "_step_count"):
                if key in sched and not _is_int(sched[key]):
                    bad(f"scheduler.{key}", "an integer", sched[key])
            for key in ("_last_lr", "base_lrs"):
                if key in sched and not (isinstance(sched[key], list) and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in sched[key])):
                    bad(f"scheduler.{key}", "a list of numbers", sched[key])
    if not _is_int(state["step"]) or state["step"] < 0:
        bad("step", "an integer ≥ 0", state["step"])
    if not isinstance(state["config"], dict) or not _plain(state["config"]):
        bad("config", "a mapping of plain values (as in the YAML)", state["config"])
    rng = state.get("rng")
    if rng is not None:
        if not isinstance(rng, dict):
            bad("rng", "a mapping", rng)
        else:
            if "torch" in rng and not _byte_tensor(rng["torch"]):
                bad("rng.torch", "a uint8 tensor (torch.get_rng_state())", rng["torch"])
            if "cuda" in rng and not (isinstance(rng["cuda"], list) and all(map(_byte_tensor, rng["cuda"]))):
                bad("rng.cuda", "a list of uint8 tensors", rng["cuda"])
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _byte_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain, value))
    return value is None or isinstance(value, (str, int, float, bool))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


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

    state = load_checkpoint(path)
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
    restore_rng(state)
    step = int(state["step"])
    if step >= run.steps:
        raise CheckpointError(f"{path}: the checkpoint is at step {step} and the run has {run.steps} steps: "
                              f"nothing to resume; raise train.steps (e.g. --steps {step + run.steps})")
    return step, changes


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
