"""What a loaded checkpoint may hold: every structure, number and optimizer state checked before anything
uses it, each problem one line naming the key.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import torch

from backprop_cli.limits import MAX_COUNT

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "step", "config")
KNOWN_KEYS = (*REQUIRED_KEYS, "scheduler", "rng", "version", "data",  # data: since validation and scaling
              "evaluation",  # evaluation: the best val_loss, its step and early stopping's counter (resume)
              "best")  # best: restore_best's copy of the best evaluation's model, optimizer and scheduler state
EVALUATION_KEYS = ("best_loss", "best_step", "reference", "waited")
# The scaling statistics are used on float32 data: each one must be a number float32 holds, a std no smaller
# than float32's smallest normal number (below it float32 loses precision, and 1e-310 is 0 there).
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # 3.4028234663852886e38
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.1754943508222875e-38
# No integer a checkpoint holds needs more than 64 bits (counts are at most MAX_COUNT, seeds 2**63 - 1); a
# bigger one (10**400) overflows every float and torch's int64, and 10**5000 is past what Python prints.
MAX_INT_BITS = 64
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# How torch runs the step (kernel, graph capture, autograd through it): this run's choice, never
# the checkpoint's (capturable=True on a CPU run, say, fails at the first step).
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


# Plain data (config, scheduler state, rng.data): bounded depth and size; a cycle counts as too deep.
MAX_DEPTH = 32


MAX_VALUES = 100_000


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
            for key in ("last_epoch", "_step_count", "num_bad_epochs", "cooldown_counter"):  # the last two:
                if key in sched and not (_is_int(sched[key]) and -1 <= sched[key] <= MAX_COUNT):  # plateau's
                    bad(f"scheduler.{key}", f"an integer -1 … {MAX_COUNT}", sched[key])
            if "best" in sched and not (_number(sched["best"]) or sched["best"] == math.inf):
                bad("scheduler.best", "a finite number or inf (reduce_on_plateau's best val_loss)", sched["best"])
            for key in ("_last_lr", "base_lrs"):
                if key in sched and not (isinstance(sched[key], list) and all(map(_number, sched[key]))):
                    bad(f"scheduler.{key}", "a list of finite numbers", sched[key])
    if not _count(state["step"]):
        bad("step", f"an integer 0 … {MAX_COUNT}", state["step"])
    config = state["config"]
    if not isinstance(config, dict):
        bad("config", "a mapping of plain values (as in the YAML)", config)
    elif (problem := _plain_problem(config)) is not None:
        problems.append(f"config: {problem}")
    else:
        problems += _config_problems(config)
    if state.get("data") is not None:
        problems += data_problems(state["data"])
    if state.get("evaluation") is not None:
        problems += evaluation_problems(state["evaluation"])
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
    ``y_scaling`` null or ``{"mean", "std"}`` lists as long as the columns of numbers float32 holds (see
    :func:`_scaling_problems`), ``split`` null or a mapping of plain values."""
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
        if key == "x_scaling" and data.get("encoding") is not None and isinstance(sc, dict) \
                and isinstance(sc.get("mean"), list):
            width = len(sc["mean"])  # one per encoded input (prediction checks it against data.encoding)
        if not (isinstance(sc, dict) and all(isinstance(sc.get(k), list) and len(sc[k]) == width
                                             for k in ("mean", "std"))):
            problems.append(f"data.{key}: expected null or {{mean, std}}: lists of {width} numbers (got {_describe(sc)})")
            continue
        problems += _scaling_problems(key, sc, names.get(cols) if key != "x_scaling" or data.get("encoding") is None
                                      else _encoded_names(data["encoding"]))
    split = data.get("split")
    if split is not None and not isinstance(split, dict):
        problems.append(f"data.split: expected null or a mapping of plain values (got {_describe(split)})")
    if data.get("base_dir") is not None and not isinstance(data["base_dir"], str):
        problems.append(f"data.base_dir: expected a folder name (got {_describe(data['base_dir'])})")
    enc = data.get("encoding")
    if enc is not None and not (isinstance(enc, dict) and isinstance(enc.get("columns"), list)):
        problems.append(f"data.encoding: expected null or {{columns: [...]}} (got {_describe(enc)})")
    extra = sorted(k for k in data if k not in ("features", "targets", "classes", "x_scaling", "y_scaling", "split",
                                                "base_dir", "encoding"))
    if extra:
        problems.append(f"data: unknown key {extra[0]!r}")
    return problems


def _scaling_problems(key: str, sc: dict, names: list[str] | None) -> list[str]:
    """Each column's mean and std, checked as the float32 they scale: a mean float32 holds (|v| ≤ 3.4e38),
    a std from float32's smallest normal number to its largest (1e-310 is 0 in float32, 1e300 inf).
    The first bad value of each list, naming its column."""
    problems = []
    for k in ("mean", "std"):
        for i, v in enumerate(sc[k]):
            ok = _number(v) and (abs(float(v)) <= FLOAT32_MAX if k == "mean" else FLOAT32_TINY <= v <= FLOAT32_MAX)
            if not ok:
                column = f" (column {_name(names[i])})" if names is not None and i < len(names) else ""
                want = (f"a number float32 holds (|v| ≤ {FLOAT32_MAX:.8g})" if k == "mean" else
                        f"a number from {FLOAT32_TINY:.8g} to {FLOAT32_MAX:.8g}, as float32 holds it")
                problems.append(f"data.{key}.{k}[{i}]{column}: expected {want}, since the float32 data are scaled "
                                f"with it (got {_describe(v)})")
                break
    return problems


def _encoded_names(encoding: Any) -> list[str] | None:
    """The names of the encoded inputs of a checkpoint's ``data.encoding`` (``island=Biscoe`` for a one-hot
    column, ``x_missing`` for an indicator), as data.encoding.Encoding.names() gives them (io does not import
    data; tests/test_checkpoint.py holds the two equal); None where the entry is not of that shape."""
    columns = encoding.get("columns") if isinstance(encoding, dict) else None
    if not isinstance(columns, list):
        return None
    out = []
    for c in columns:
        if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("levels"), list)
                and all(isinstance(v, str) for v in c["levels"])):
            return None
        onehot = c.get("type") == "category" and c.get("encoding") == "onehot"
        out += [f"{c['name']}={v}" for v in c["levels"]] if onehot else [c["name"]]
        out += [f"{c['name']}_missing"] if c.get("indicator") is True else []
    return out


def evaluation_problems(ev: Any) -> list[str]:
    """The ``evaluation`` entry (train with validation data, since resumed runs go on from it): ``best_loss``
    and ``reference`` (the val_loss early stopping counts improvements against) finite numbers or null (no
    evaluation yet), ``best_step`` and ``waited`` (evaluations without an improvement) counts."""
    if not (isinstance(ev, dict) and set(ev) == set(EVALUATION_KEYS)):
        return [f"evaluation: expected a mapping of {', '.join(EVALUATION_KEYS)} (got {_describe(ev)})"]
    problems = [f"evaluation.{k}: expected a finite number or null (got {_describe(ev[k])})"
                for k in ("best_loss", "reference") if ev[k] is not None and not _number(ev[k])]
    problems += [f"evaluation.{k}: expected an integer 0 … {MAX_COUNT} (got {_describe(ev[k])})"
                 for k in ("best_step", "waited") if not _count(ev[k])]
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
        return f"not a CPU RNG state torch accepts ({first_line(e)})"
    return None


def _plain_problem(value: Any) -> str | None:
    """Why ``value`` is not plain data (mappings with string keys, lists, strings, numbers, booleans,
    None) of at most MAX_DEPTH levels and MAX_VALUES values, integers of at most MAX_INT_BITS bits; else
    None. A cycle is too deep."""
    stack, count = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > MAX_INT_BITS:
            return f"expected integers of at most {MAX_INT_BITS} bits (got {_REPR.repr(item)})"
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
    """An int or a float (not a bool) that is a finite float64: every number a run uses becomes one, so an int
    like 10**400 (which pickle holds, and float() overflows on) is not a number here."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isfinite(value) if isinstance(value, float) else value.bit_length() <= 1023


def _count(value: Any) -> bool:
    """An integer count 0 … MAX_COUNT (a step of 10**400 overflows torch's int64 and every float)."""
    return _is_int(value) and 0 <= value <= MAX_COUNT


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

    def repr_int(self, x: int, level: int) -> str:  # 10**5000 is past what Python turns into text
        if x.bit_length() <= 128:
            return super().repr_int(x, level)
        return f"<{'a negative' if x < 0 else 'an'} integer of {x.bit_length():,} bits>"


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
        needs = [a | b for a, b in zip(_state_keys(optimizer, merged_groups(optimizer, groups)),
                                       _state_keys(optimizer, optimizer.param_groups))]
    except Exception as e:  # noqa: BLE001 - torch's own check of a combination of values
        return f"its hyperparameters cannot run a step ({first_line(e)})"
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
    return None if _number(value) and 0 <= value <= MAX_COUNT else \
        f"expected a count 0 … {MAX_COUNT} (got {_describe(value)})"


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


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:120]


def merged_groups(optimizer: torch.optim.Optimizer, saved_groups: list[dict]) -> list[dict]:
    """The param groups the optimizer gets: its own values, the checkpoint's over them, then this
    run's implementation keys."""
    mine = {k: optimizer.defaults[k] for k in IMPLEMENTATION_KEYS if k in optimizer.defaults}
    return [{**{k: v for k, v in ours.items() if k != "params"}, **saved, **mine}
            for ours, saved in zip(optimizer.param_groups, saved_groups)]
