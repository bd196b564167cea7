"""train --resume: the run continues from a checkpoint of the same model, its weights, optimizer and
scheduler state, RNG and data position restored; what changed in the config is said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backprop_cli.errors import CheckpointError
from backprop_cli.io.checkpoint import load_checkpoint, load_optimizer, load_weights, restore_rng


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
# reduce_on_plateau's position adds its best val_loss and counters (core.components.PlateauSchedule.POSITION).
SCHEDULE_POSITION = ("last_epoch", "_step_count", "_last_lr", "base_lrs", "best", "num_bad_epochs", "cooldown_counter")


def _same_model(saved: Any, cfg) -> bool:
    from pydantic import ValidationError

    from backprop_cli.config import ModelConfig

    try:
        return ModelConfig.model_validate(saved).model_dump() == cfg.model.model_dump()
    except (ValidationError, TypeError):
        return False


def resume_from(run, path: Path) -> tuple[int, list[str], dict | None]:
    """Load weights, optimizer, scheduler and RNG state into ``run``; returns (saved step, what changed, the
    checkpoint's ``evaluation`` entry: the best val_loss, its step and early stopping's counter, or None
    for a checkpoint without one).

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
    best_state = _best_state(run, state, path)
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
    evaluation = state.get("evaluation")
    if evaluation is not None and best_state is not None:
        evaluation = {**evaluation, "best_state": best_state}
    return step, changes, evaluation


def _best_state(run, state: dict, path: Path) -> tuple | None:
    """restore_best: the checkpoint's copy of the best evaluation's state (its ``best`` entry) as the run's
    snapshot, so that the resumed run puts that model back at its end as the uninterrupted one does. It is
    loaded into the run's own model and optimizer first, by the same functions and checks as the last state
    (loaded over it next); of a schedule, only the position is taken, as of the last state."""
    import copy

    early = run.cfg.train.early_stopping
    best = state.get("best")
    if best is None or early is None or not early.restore_best:
        return None
    shadow = {**state, **best}
    load_weights(run.model, shadow, path)
    load_optimizer(run.optimizer, shadow, path)
    model = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    sched = None
    if run.scheduler is not None:
        sched = copy.deepcopy(run.scheduler.state_dict())
        if isinstance(best.get("scheduler"), dict):
            sched.update({k: best["scheduler"][k] for k in SCHEDULE_POSITION if k in best["scheduler"]})
    return model, copy.deepcopy(run.optimizer.state_dict()), sched


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
