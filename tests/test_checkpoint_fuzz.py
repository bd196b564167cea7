"""Crafted checkpoints (issue 16): real checkpoints of every optimizer with mutated shapes, dtypes,
layouts (sparse, meta, complex, quantized, overlapping, non-contiguous), nesting and types.

Each either loads, and then a training step runs on what was loaded (the fused kernels crashed on
wrong-shaped state), or is refused with one CheckpointError line: never another exception, never a
crash. A few representative cases also run through ``train --resume`` in a subprocess, where a
segfault shows as a negative return code instead of killing the suite.
"""

import copy
import sys

import pytest
import torch
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from backprop_cli.core.build import build_run
from backprop_cli.io.checkpoint import load_checkpoint, load_optimizer, load_weights, restore_rng, save_checkpoint
from backprop_cli.config import load_config
from backprop_cli.errors import CheckpointError
from conftest import ROOT, cli_in_a_new_process

REGRESSION = ROOT / "configs" / "regression.yaml"
OPTIMIZERS = {  # regression.yaml with each optimizer whose state differs
    "sgd": [],  # momentum 0.9: momentum_buffer
    "adam": ["optimizer={name: adam, lr: 0.01, amsgrad: true}"],  # step, exp_avg, exp_avg_sq, max_exp_avg_sq
    "rmsprop": ["optimizer={name: rmsprop, lr: 0.01, momentum: 0.5, centered: true}"],
    "adagrad": ["optimizer={name: adagrad, lr: 0.01}"],  # step, sum
}


def fresh_run(name):
    return build_run(load_config(REGRESSION, OPTIMIZERS[name]))


def train_step(run, index):
    x, y = run.batches(index)
    run.optimizer.zero_grad()
    run.loss_fn(run.model(x), y).backward()
    run.optimizer.step()


@pytest.fixture(scope="module")
def goods(tmp_path_factory):
    """name → a real checkpoint after 3 steps, loaded back (what the mutations start from)."""
    folder = tmp_path_factory.mktemp("goods")
    out = {}
    for name in OPTIMIZERS:
        run = fresh_run(name)
        for i in range(3):
            train_step(run, i)
        path = folder / f"{name}.pt"
        save_checkpoint(path, model=run.model, optimizer=run.optimizer, step=3, config=run.cfg.plain(),
                        scheduler=run.scheduler)
        out[name] = torch.load(path, weights_only=True)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- strategies

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool,
          torch.complex64]


def _overlapping(t):  # every element one memory location (stride 0): in-place kernels corrupt the heap
    return t.flatten()[:1].reshape([1] * t.dim()).expand(t.shape) if t.numel() else t


LAYOUTS = {
    "dense": lambda t: t,
    "transposed": lambda t: t.mT if t.dim() >= 2 else t,
    "every other": lambda t: torch.cat([t, t])[::2] if t.dim() >= 1 else t,
    "overlapping": _overlapping,
    "sparse": lambda t: t.to_sparse(),
    "meta": lambda t: t.to("meta"),
    "quantized": lambda t: torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8),
}


def _bump(shape, i, by):
    shape = list(shape)
    if shape:
        shape[i % len(shape)] = max(0, shape[i % len(shape)] + by)
    return shape


@st.composite
def tensors(draw, like=None):
    """A tensor of the shape of ``like`` (or one near it, or any small one), any dtype, any layout."""
    shapes = [st.lists(st.integers(0, 4), max_size=3)]
    if like is not None:
        shape = list(like.shape)
        shapes += [st.just(shape), st.just(shape[1:]), st.just(shape + [1]),
                   st.tuples(st.integers(0, 3), st.sampled_from([-1, 1])).map(lambda a: _bump(shape, *a))]
    shape = draw(st.one_of(*shapes))
    fill = draw(st.sampled_from([0.0, 1.0, -2.5, float("nan"), float("inf"), 3e38]))
    t = torch.full(shape, fill).to(draw(st.sampled_from(DTYPES)))
    try:
        return LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))](t)
    except (RuntimeError, ValueError, NotImplementedError):
        return t  # a layout torch has not for this dtype


def _deep(depth):
    root = node = []
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


def _cycle(kind):
    x = [] if kind == "list" else {}
    x.append(x) if kind == "list" else x.update(me=x)
    return x


# Numbers past what a run uses (issue 23, items 7 and 9): ints beyond 64 bits and beyond float64 (10**400),
# floats finite in float64 but 0, subnormal or inf in float32, the bounds of the counts, nan and inf.
NUMBERS = st.one_of(
    st.builds(lambda bits, sign, off: sign * (2**bits + off), st.integers(0, 1400), st.sampled_from([1, -1]),
              st.integers(-3, 3)),  # any size of integer, cheap to draw (st.integers(-10**400, ...) overruns)
    st.integers(-2**66, 2**66), st.floats(),
    st.sampled_from([10**400, -10**400, 2**1100, 2**64, 2**63, 2**50, 2**50 + 1, -1, 0, 1, 1e300, -1e300, 1e-310,
                     1e-45, 1e-40, 1.1754943508222875e-38, 3.4028234663852886e38, 3.5e38, -3.5e38, 0.0, -0.0,
                     float("inf"), float("-inf"), float("nan")]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6), NUMBERS)
VALUES = st.recursive(
    SCALARS | tensors(),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(-1, 5), inner, max_size=3),
    max_leaves=6)
SPECIAL = st.one_of(st.sampled_from([33, 200, 5000]).map(_deep), st.sampled_from(["list", "dict"]).map(_cycle))


def slots(state):
    """Every place a mutation can hit: the paths of all values down to four levels."""
    found = []

    def walk(node, path):
        if path:
            found.append(path)
        if len(path) < 4 and isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif len(path) < 4 and isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(state, ())
    return found


@st.composite
def mutations(draw, good):
    """(path, operation, value): replace with a tensor like the one there, with any value, with a
    deep or recursive structure; delete; add an unknown key or element."""
    path = draw(st.sampled_from(slots(good)))
    op = draw(st.sampled_from(["tensor", "tensor", "value", "special", "delete", "add"]))
    here = _get(good, path)
    value = {"tensor": lambda: draw(tensors(here if isinstance(here, torch.Tensor) else None)),
             "value": lambda: draw(VALUES), "special": lambda: draw(SPECIAL),
             "add": lambda: (draw(st.text(max_size=5) | st.integers(-1, 9)), draw(VALUES | tensors())),
             "delete": lambda: None}[op]()
    return path, op, value


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def apply(state, mutation):
    path, op, value = mutation
    try:
        parent = _get(state, path[:-1])
        if op == "delete":
            del parent[path[-1]]
        elif op == "add":
            target, (key, value) = _get(state, path), value
            if isinstance(target, dict):
                target[key] = value
            elif isinstance(target, list):
                target.append(value)
            else:
                parent[path[-1]] = value
        else:
            parent[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass  # an earlier mutation removed or replaced the way there


def save_deep(state, path):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling a 5000-level nest recurses (loading it does not)
    try:
        torch.save(state, path)
    finally:
        sys.setrecursionlimit(limit)


# --------------------------------------------------------------------------- the property


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized tensors are deprecated; complex casts
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_mutated_checkpoint_loads_and_trains_or_is_refused_in_one_line(goods, folder, data):
    name = data.draw(st.sampled_from(sorted(OPTIMIZERS)), label="optimizer")
    state = copy.deepcopy(goods[name])
    for mutation in data.draw(st.lists(mutations(goods[name]), min_size=1, max_size=3), label="mutations"):
        apply(state, mutation)
    path = folder / "bad.pt"
    try:
        save_deep(state, path)
    except Exception:  # noqa: BLE001 - a value torch.save cannot write is no test case
        reject()
    run = fresh_run(name)
    with torch.random.fork_rng(devices=[]):
        try:
            loaded = load_checkpoint(path)
            load_weights(run.model, loaded, path)
            load_optimizer(run.optimizer, loaded, path)
            restore_rng(loaded)
        except CheckpointError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
            event(f"refused: {str(e)[len(str(path)) + 2:].split(':')[0]}")
            return
        event("loaded and trained")
        train_step(run, 0)  # the kernels run on the state that loaded
        train_step(run, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_strategies_reach_both_outcomes(goods, folder):
    """The property above is not vacuous: unmutated checkpoints load and train, and the layouts and
    dtypes the strategies draw are refused where they must be."""
    for name in OPTIMIZERS:
        path = folder / f"plain-{name}.pt"
        torch.save(goods[name], path)
        run = fresh_run(name)
        state = load_checkpoint(path)
        load_weights(run.model, state, path)
        load_optimizer(run.optimizer, state, path)
        train_step(run, 0)
    weight = goods["sgd"]["model"]["layer1.weight"]
    for layout in ("sparse", "meta", "quantized", "overlapping"):
        state = copy.deepcopy(goods["sgd"])
        state["optimizer"]["state"][0]["momentum_buffer"] = LAYOUTS[layout](weight.clone())
        path = folder / f"{layout}.pt"
        torch.save(state, path)
        with pytest.raises(CheckpointError, match="state\\[0\\].momentum_buffer: expected a"):
            load_optimizer(fresh_run("sgd").optimizer, load_checkpoint(path), path)


# --------------------------------------------------------------------------- through train --resume


def _sgd_state(state):
    state["optimizer"]["state"] = {i: {"momentum_buffer": torch.zeros(3)} for i in range(4)}


def _overlapping_buffer(state):
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(1, 8).expand(64, 8)


def _sparse_weight(state):
    state["model"]["layer1.weight"] = state["model"]["layer1.weight"].to_sparse()


RESUMES = [(_sgd_state, "state[0].momentum_buffer: has shape [3]"),
           (_overlapping_buffer, "state[0].momentum_buffer: expected a contiguous tensor"),
           (_sparse_weight, "model.layer1.weight: expected a dense float tensor")]


def test_crashing_checkpoints_exit_2_with_one_line_through_resume(tmp_path):
    """The segfaults of issue 16 (wrong-shaped and overlapping buffers under the fused kernels) and
    a traceback, resumed in a new process (a crash there fails the test): exit 2, one error line, no signal."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    good = tmp_path / "good.pt"
    made = CliRunner().invoke(app, ["train", "-c", str(REGRESSION), "--steps", "10", "--save", str(good), "-q"])
    assert made.exit_code == 0, made.output
    runs = []
    for i, (change, fragment) in enumerate(RESUMES):
        state = torch.load(good, weights_only=True)
        change(state)
        bad = tmp_path / f"bad{i}.pt"
        torch.save(state, bad)
        runs.append((["train", "-c", REGRESSION, "--steps", "12", "--resume", bad, "-q"], bad, fragment))
    code, results = cli_in_a_new_process(*(argv for argv, _, _ in runs))
    assert code == 0 and len(results) == len(runs), (code, results)  # a segfault: a negative code
    for (_, bad, fragment), r in zip(runs, results):
        assert r["exit_code"] == 2, (bad, r)
        lines = r["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and fragment in lines[0], lines


# --------------------------------------------------------------------------- the numbers a checkpoint holds


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    """A penguins checkpoint with everything that holds a number: scaling statistics, a step schedule, the
    evaluation entry (validation with early stopping), Adam's state; its config and rows to predict."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app
    from test_validation import FEATURES, penguins_yaml

    tmp = tmp_path_factory.mktemp("penguins")
    cfg = penguins_yaml(tmp, "steps: 4, eval_every: 2, early_stopping: {patience: 3}")
    r = CliRunner().invoke(app, ["train", "-c", str(cfg), "--set", "scheduler={name: step, step_size: 2}",
                                 "--save", str(tmp / "p.pt"), "-q", "--threads", "1"])
    assert r.exit_code == 0, r.output
    rows = tmp / "rows.csv"
    rows.write_text("species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\nGentoo,46.1,13.2,211,4500\n")
    return cfg, torch.load(tmp / "p.pt", weights_only=True), rows


def number_slots(state):
    """Every place in a checkpoint that holds a number (a one-element tensor for the optimizer's steps)."""
    def number(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
            isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() == 0)
    return [p for p in slots(state) if p[0] != "model" and number(_get(state, p))]


def _resume_and_step(cfg, path):
    """train --resume in-process: the run resumed from ``path`` (its evaluation entry included), one step."""
    from backprop_cli.runs.resume import resume_from
    from backprop_cli.runs.sinks import EvaluationSink

    run = build_run(load_config(cfg, ["scheduler={name: step, step_size: 2}", "train.steps=40"]))
    with torch.random.fork_rng(devices=[]):
        start, _, evaluation = resume_from(run, path)
        EvaluationSink(lambda: ({}, {}), 2, run.steps, patience=3).continue_from(evaluation)
        x, y = run.batches(start)
        run.optimizer.zero_grad()
        run.loss_fn(run.model(x), y).backward()
        run.optimizer.step()
        run.scheduler.step()


def test_the_number_slots_cover_every_checked_field(penguins):
    found = {p[:2] if p[0] in ("data", "optimizer", "config") else p[:1] for p in number_slots(penguins[1])}
    assert {("data", "x_scaling"), ("config", "optimizer"), ("step",), ("scheduler",), ("evaluation",), ("rng",),
            ("optimizer", "param_groups"), ("optimizer", "state")} <= found, found


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a numpy overflow warning is a finding too
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_number_in_a_checkpoint_runs_or_is_one_line(cli, penguins, folder, data):  # cli: stateless
    """Every number the checkpoint holds (scaling statistics, config, step, scheduler counters, the evaluation
    entry, param groups, optimizer steps), replaced by any number (huge ints, subnormals, inf, nan, float32's
    edges): predict and train --resume run (finite probabilities, no empty cell) or give one error line,
    exit 2. Never an OverflowError, a numpy warning or a traceback."""
    from backprop_cli.errors import BackpropError

    cfg, good, rows = penguins
    state = copy.deepcopy(good)
    for path in data.draw(st.lists(st.sampled_from(number_slots(good)), min_size=1, max_size=2), label="paths"):
        value = data.draw(NUMBERS, label=f"value at {path}")
        if isinstance(_get(good, path), torch.Tensor) and data.draw(st.booleans(), label="as a tensor"):
            try:
                value = torch.tensor(float(value))
            except OverflowError:
                pass
        apply(state, (path, "value", value))
    path = folder / "numbers.pt"
    torch.save(state, path)
    r = cli("predict", "--checkpoint", path, "--data", rows)
    if r.exit_code == 0:
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 3 and all(cell not in ("", "nan") for line in lines for cell in line.split(",")), lines
        event("predicted")
    else:
        assert r.exit_code == 2 and r.stderr.startswith(f"error: {path}: "), r.output
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", r.output
        event("predict refused")
    try:
        _resume_and_step(cfg, path)
    except BackpropError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
        event("resume refused")
        return
    event("resumed and stepped")
