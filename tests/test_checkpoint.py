"""Checkpoints given to the tool are untrusted (io/checkpoint.py, io/checkpoint_checks.py): crafted
ones are refused in one line; a failed run never replaces a good file."""


import os
import sys

# --------------------------------------------------------------------------- crafted checkpoints
import zipfile  # noqa: E402

import pytest
import torch  # noqa: E402
from conftest import ROOT, cli_in_a_new_process, error_of, one_line, within, write

from backprop_cli.errors import CheckpointError
from backprop_cli.io.checkpoint import (  # noqa: E402
    checkpoint_size_check,
    expected_checkpoint_bytes,
    load_checkpoint,
)

REGRESSION, CLASSIFICATION = ROOT / "configs" / "regression.yaml", ROOT / "configs" / "classification.yaml"


def _train(*args):
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """good.pt: ``train -c regression.yaml --steps 10 --save good.pt`` (SGD with momentum, fused)."""
    path = tmp_path_factory.mktemp("good") / "good.pt"
    _train("train", "-c", REGRESSION, "--steps", 10, "--save", path, "-q")
    return path


def assert_refused(r, ck, fragment):
    """``r``: a finished process, or a result of :func:`conftest.cli_in_a_new_process`."""
    code, err = (r.returncode, r.stderr) if hasattr(r, "returncode") else (r["exit_code"], r["stderr"])
    assert code == 2, (code, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {ck}: ") and fragment in lines[0], lines


def test_optimizer_state_of_the_wrong_shape_is_refused_not_a_segfault(good, tmp_path):
    """Issue 16, item 1: both exited 139 (fused SGD and fused Adam kernels). Resumed in a new process."""
    state = torch.load(good, weights_only=True)
    state["optimizer"]["state"] = {i: {"momentum_buffer": torch.zeros(3)} for i in range(4)}
    bad, bad_adam = tmp_path / "bad.pt", tmp_path / "bad_adam.pt"
    torch.save(state, bad)
    adam_good = tmp_path / "adam.pt"
    _train("train", "-c", CLASSIFICATION, "--steps", 10, "--save", adam_good, "-q")
    state = torch.load(adam_good, weights_only=True)
    for entry in state["optimizer"]["state"].values():
        entry["exp_avg"] = torch.zeros(2)
    torch.save(state, bad_adam)
    code, (sgd, adam) = cli_in_a_new_process(*(["train", "-c", cfg, "--steps", 12, "--resume", ck, "-q"]
                                               for cfg, ck in ((REGRESSION, bad), (CLASSIFICATION, bad_adam))))
    assert code == 0, code  # a segfault: a negative code
    assert_refused(sgd, bad, "optimizer state does not fit the config's optimizer: state[0].momentum_buffer: has "
                             "shape [3], its parameter [64, 8]")
    assert_refused(adam, bad_adam, "state[0].exp_avg: has shape [2], its parameter [32, 6]")


def _mutated(good, change):
    state = torch.load(good, weights_only=True)
    change(state)
    return state


def _nested(depth):
    root = node = {}
    for _ in range(depth):
        node["x"] = {}
        node = node["x"]
    return root


def _self_holding():
    a = []
    a.append(a)
    return a


def _set(key_path, value):
    def change(state):
        node = state
        for k in key_path[:-1]:
            node = node[k]
        node[key_path[-1]] = value(state) if callable(value) else value
    return change


CRAFTED = [
    ("sparse weight", _set(("model", "layer1.weight"), lambda s: s["model"]["layer1.weight"].to_sparse()),
     "model.layer1.weight: expected a dense float tensor (got a sparse_coo torch.float32 tensor of shape [64, 8])"),
    ("quantized weight", _set(("model", "layer2.bias"), lambda s: torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.qint8)),
     "model.layer2.bias: expected a dense float tensor (got a quantized torch.qint8 tensor of shape [2])"),
    ("meta weight", _set(("model", "layer2.bias"), torch.empty(2, device="meta")),
     "model.layer2.bias: expected a dense float tensor (got a meta torch.float32 tensor of shape [2])"),
    ("complex weight", _set(("model", "layer2.bias"), torch.zeros(2, dtype=torch.complex64)),
     "expected a dense float tensor (got a torch.complex64 tensor of shape [2])"),
    ("integer weight", _set(("model", "layer2.bias"), torch.zeros(2, dtype=torch.int64)), "got a torch.int64 tensor"),
    ("nan weight", _set(("model", "layer2.bias"), torch.tensor([0.0, float("nan")])),
     "model.layer2.bias: holds non-finite values"),
    ("short rng", _set(("rng", "torch"), torch.zeros(10, dtype=torch.uint8)),
     "rng.torch: expected a uint8 tensor of 5056 bytes"),
    ("random rng", _set(("rng", "torch"), torch.randint(0, 256, (5056,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))),
     "rng.torch: not a CPU RNG state torch accepts (Invalid mt19937 state)"),
    ("lr abc", _set(("optimizer", "param_groups", 0, "lr"), "abc"),
     "param_groups[0].lr: expected a finite number ≥ 0 (got str 'abc')"),
    ("state entry an int", _set(("optimizer", "state", 0), 3), "state[0]: expected a mapping of tensors (got int 3)"),
    ("state for no parameter", _set(("optimizer", "state", 7), {}), "state has an entry 7, which is no parameter's id"),
    ("buffer of another shape", _set(("optimizer", "state", 1, "momentum_buffer"), torch.zeros(64, 8)),
     "state[1].momentum_buffer: has shape [64, 8], its parameter [64]"),
    ("missing buffer", _set(("optimizer", "state", 1), {}), "state[1] has no momentum_buffer"),
    ("overlapping buffer", _set(("optimizer", "state", 1, "momentum_buffer"), torch.zeros(1).expand(64)),
     "state[1].momentum_buffer: expected a contiguous tensor (got strides [0])"),
    ("config.optimizer a string", _set(("config", "optimizer"), "sgd"), "config.optimizer: expected a mapping (got str 'sgd')"),
    ("config lr zero", _set(("config", "optimizer", "lr"), 0), "config.optimizer.lr: expected a number > 0 (got int 0)"),
    ("config 5000 deep", _set(("config", "deep"), _nested(5000)), "config: nested more than 32 levels deep (or recursive)"),
    ("config recursive", _set(("config", "loop"), _self_holding()), "config: nested more than 32 levels deep (or recursive)"),
    ("version 99", _set(("version",), 99), "version: expected 1 (this version of backprop reads no other) (got int 99)"),
    ("unknown key", _set(("extra",), torch.zeros(3)), "unknown keys: 'extra'"),
]


def save_deep(state, path):
    """torch.save, with room for pickling a 5000-level nest (torch.load needs none: it does not recurse)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        torch.save(state, path)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized tensors are deprecated
@pytest.mark.parametrize("name,change,fragment", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_checkpoint_is_refused_in_one_line(cli, good, tmp_path, name, change, fragment):
    """Issue 16, item 2: each of these was a traceback (or, complex and version 99, a silent load)."""
    bad = tmp_path / "bad.pt"
    save_deep(_mutated(good, change), bad)
    r = cli("train", "-c", REGRESSION, "--steps", 12, "--resume", bad, "-q")
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and fragment in lines[0], lines


def test_the_good_checkpoint_still_resumes_and_a_missing_version_reads_as_1(cli, good, tmp_path):
    assert cli("train", "-c", REGRESSION, "--steps", 12, "--resume", good, "-q").exit_code == 0
    old = tmp_path / "old.pt"
    torch.save(_mutated(good, lambda s: s.pop("version")), old)
    assert cli("train", "-c", REGRESSION, "--steps", 12, "--resume", old, "-q").exit_code == 0


def _add_member(path, name, size, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "a", compression=compress) as z:
        with z.open(name, "w", force_zip64=True) as f:
            chunk = bytes(2**20)
            for _ in range(size // 2**20):
                f.write(chunk)


def test_a_zip_bomb_is_refused_before_torch_reads_it(cli, good, tmp_path, monkeypatch):
    """Issue 16, item 3: a few KB of deflated zeros declaring 64 MiB is refused unread."""
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(good.read_bytes())
    _add_member(bomb, "good/data/99", 64 * 2**20)
    assert bomb.stat().st_size < 200_000
    monkeypatch.setattr(torch, "load", lambda *a, **kw: pytest.fail("torch.load read the bomb"))
    r = cli("inspect-grads", "-c", REGRESSION, "--checkpoint", bomb)
    assert r.exit_code == 2
    # inspect-grads knows the model, so the bound is what a checkpoint of this model can hold
    assert r.stderr.strip().startswith(f"error: {bomb}: refused: the archive declares 67,") and \
        "a checkpoint of this model can hold" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_declared_sizes_are_held_to_what_the_model_needs(good, tmp_path):
    params = 8 * 64 + 64 + 64 * 2 + 2
    checkpoint_size_check(good, expected_checkpoint_bytes(params))
    assert load_checkpoint(good, expected_params=params)["step"] == 10
    big = tmp_path / "big.pt"
    big.write_bytes(good.read_bytes())
    _add_member(big, "good/data/99", 17 * 2**20, zipfile.ZIP_STORED)  # stored, as torch writes: no bomb ratio
    checkpoint_size_check(big)  # under the default cap
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(big, expected_params=params)
    assert one_line(e.value).startswith(f"{big}: refused: the archive declares 17,")
    assert f"more than the {expected_checkpoint_bytes(params):,} a checkpoint of this model can hold" in str(e.value)


def test_without_the_models_size_the_default_cap_holds(good, tmp_path, monkeypatch):
    import backprop_cli.io.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_MAX_BYTES", 2**20)
    big = tmp_path / "big.pt"
    big.write_bytes(good.read_bytes())
    _add_member(big, "good/data/99", 2 * 2**20, zipfile.ZIP_STORED)
    with pytest.raises(CheckpointError, match=r"declares 2,1\d\d,\d{3} bytes of data, more than the 1,048,576 a "
                                              r"checkpoint may hold$"):
        load_checkpoint(big)


def test_archives_with_too_many_members_or_too_much_structure_are_refused(good, tmp_path):
    many = tmp_path / "many.pt"
    many.write_bytes(good.read_bytes())
    with zipfile.ZipFile(many, "a") as z:
        for i in range(5000):
            z.writestr(f"good/data/x{i}", b"")
    with pytest.raises(CheckpointError, match=r"refused: the archive declares 5,01\d entries"):
        load_checkpoint(many)
    fat = tmp_path / "fat.pt"
    torch.save(_mutated(good, _set(("config", "junk"), "x" * 5 * 2**20)), fat)
    with pytest.raises(CheckpointError, match=r"bytes of structure in data.pkl"):
        load_checkpoint(fat)


def test_inputs_that_are_not_checkpoint_archives(tmp_path):
    text = write(tmp_path / "legacy.pt", "a,b\n")
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(not the zip archive torch.save writes"):
        load_checkpoint(text)
    legacy = tmp_path / "legacy2.pt"
    torch.save({"model": {}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(legacy)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    assert within(10, lambda: error_of(lambda: load_checkpoint(fifo))) == \
        f"{fifo}: is a FIFO (named pipe), not a regular file; the checkpoint file must be a regular file"


# --------------------------------------------------------------------------- a failed run's checkpoint


def _run_state():
    from backprop_cli.config import load_config
    from backprop_cli.core.build import build_run

    cfg = load_config(REGRESSION)
    run = build_run(cfg)
    return run, dict(model=run.model, optimizer=run.optimizer, config=cfg.plain())


def test_a_failed_run_writes_its_last_good_state_beside_an_existing_checkpoint(cli, tmp_path):
    good = tmp_path / "good.pt"
    assert cli("train", "-c", REGRESSION, "--steps", 50, "--save", good, "-q").exit_code == 0
    before = good.read_bytes()
    r = cli("train", "-c", REGRESSION, "--set", "optimizer.lr=100", "--save", good)
    assert r.exit_code == 3, r.output
    assert good.read_bytes() == before  # the 50-step checkpoint survives the failed run
    beside = tmp_path / "good.last-good.pt"
    assert load_checkpoint(beside)["step"] == 7  # the failed run's last good state, said where
    said = " ".join(r.stdout.split())  # a long path may wrap the line
    assert f"checkpoint: wrote {beside} (step 7): the last good state; {good} is kept as it was" in said
    # a run that wrote the file itself (--save-every) goes on writing it
    fresh = tmp_path / "fresh.pt"
    r = cli("train", "-c", REGRESSION, "--set", "optimizer.lr=100", "--save", fresh, "--save-every", 5)
    assert r.exit_code == 3 and load_checkpoint(fresh)["step"] == 7 and not (tmp_path / "fresh.last-good.pt").exists()


# ------------------------------------- numbers beyond what the run uses (issue 23, items 7 and 9)

@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    """A penguins run with validation and standardized inputs (its ``data`` entry: columns, classes,
    statistics): its config, checkpoint and a CSV of rows to predict."""
    from test_validation import FEATURES, penguins_yaml

    tmp = tmp_path_factory.mktemp("penguins")
    cfg = penguins_yaml(tmp, "steps: 3")
    _train("train", "-c", cfg, "--save", tmp / "p.pt", "-q", "--threads", "1")
    rows = write(tmp / "rows.csv", "species," + ",".join(FEATURES) + "\nAdelie,39.1,18.7,181,3750\n"
                 "Gentoo,46.1,13.2,211,4500\n")
    return cfg, tmp / "p.pt", rows


def _crafted(ckpt, tmp_path, change):
    state = torch.load(ckpt, weights_only=True)
    change(state)
    path = tmp_path / "x.pt"
    torch.save(state, path)
    return path


def _put(*keys_value):
    *keys, value = keys_value

    def change(state):
        node = state
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


HUGE = 10**400  # 1,329 bits: float() overflows on it, str() of 10**5000 fails
BITS = "<an integer of 1,329 bits>"


@pytest.mark.parametrize("change, fragment", [
    (_put("data", "x_scaling", "mean", 0, HUGE), "data: expected integers of at most 64 bits (got " + BITS),
    (_put("data", "x_scaling", "mean", 1, 1e300), "data.x_scaling.mean[1] (column bill_depth_mm): expected a number "
     "float32 holds (|v| ≤ 3.4028235e+38), since the float32 data are scaled with it (got float 1e+300)"),
    (_put("data", "x_scaling", "std", 2, 1e-310), "data.x_scaling.std[2] (column flipper_length_mm): expected a number "
     "from 1.1754944e-38 to 3.4028235e+38, as float32 holds it, since the float32 data are scaled with it (got float "
     "1e-310)"),
    (_put("data", "x_scaling", "std", 3, 1e-40), "data.x_scaling.std[3] (column body_mass_g): expected a number from"),
    (_put("data", "x_scaling", "std", 0, 3.5e38), "data.x_scaling.std[0] (column bill_length_mm): expected a number "),
    (_put("data", "x_scaling", "std", 0, 0), "(got int 0)"),
    (_put("config", "optimizer", "lr", HUGE), "config: expected integers of at most 64 bits (got " + BITS),
    (_put("config", "train", "steps", 2**300), "config: expected integers of at most 64 bits (got <an integer of "
     "301 bits>)"),
    (_put("config", "seed", 2**64), "config: expected integers of at most 64 bits (got 18446744073709551616)"),
    (_put("step", HUGE), "step: expected an integer 0 … 1125899906842624 (got int " + BITS),
    (_put("step", 2**60), "step: expected an integer 0 … 1125899906842624 (got int 1152921504606846976)"),
    (_put("scheduler", {"last_epoch": HUGE}), "scheduler: expected integers of at most 64 bits"),
    (_put("scheduler", {"last_epoch": 2**60}), "scheduler.last_epoch: expected an integer -1 … 1125899906842624"),
    (_put("scheduler", {"_step_count": -5}), "scheduler._step_count: expected an integer -1 … 1125899906842624"),
    (_put("rng", "data", "next_batch", HUGE), "rng.data: expected integers of at most 64 bits"),
], ids=["mean-10**400", "mean-1e300", "std-1e-310", "std-subnormal32", "std-3.5e38", "std-0", "lr-10**400",
        "steps-2**300", "seed-2**64", "step-10**400", "step-2**60", "last_epoch-10**400", "last_epoch-2**60", "step_count--5",
        "next_batch-10**400"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "resume", "inspect-grads"])
def test_numbers_beyond_what_the_run_uses_are_one_line(cli, penguins, tmp_path, change, fragment, command):
    """Crafted numbers load under weights_only=True; they are refused where the checkpoint is read, one line
    naming the key (the column, for a scaling statistic), whichever command reads it: never OverflowError."""
    cfg, ckpt, rows = penguins
    bad = _crafted(ckpt, tmp_path, change)
    args = {"evaluate": ["evaluate", "--checkpoint", bad],
            "predict": ["predict", "--checkpoint", bad, "--data", rows],
            "export": ["export", "--checkpoint", bad, "--out", tmp_path / "m.safetensors"],
            "resume": ["train", "-c", cfg, "--resume", bad, "--steps", 40],
            "inspect-grads": ["inspect-grads", "-c", cfg, "--checkpoint", bad]}[command]
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"error: {bad}: not a valid backprop checkpoint: "), r.stderr
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", r.stderr
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", HUGE),
     f"param_groups[0].lr: expected a finite number ≥ 0 (got int {BITS})"),
    (lambda s: s["optimizer"]["param_groups"][0].__setitem__("eps", -HUGE), "param_groups[0].eps: expected a "
     "finite number (got int <a negative integer of 1,329 bits>)"),
    (lambda s: s["optimizer"]["param_groups"][0].__setitem__("betas", (0.9, HUGE)), "param_groups[0].betas: "
     "expected 2 finite numbers"),
    (lambda s: s["optimizer"]["state"][0].__setitem__("step", HUGE),
     f"state[0].step: expected a count 0 … 1125899906842624 (got int {BITS})"),
    (lambda s: s["optimizer"]["state"][0].__setitem__("step", torch.tensor(1e30)),
     "state[0].step: expected a count 0 … 1125899906842624 (got float 1.0000000150474662e+30)"),
], ids=["group-lr", "group-eps", "group-betas", "state-step", "state-step-tensor"])
@pytest.mark.parametrize("command", ["resume", "inspect-grads"])
def test_huge_numbers_in_the_optimizer_state_are_one_line(cli, penguins, tmp_path, change, fragment, command):
    cfg, ckpt, _ = penguins
    bad = _crafted(ckpt, tmp_path, change)
    args = (["train", "-c", cfg, "--resume", bad, "--steps", 40, "-q"] if command == "resume"
            else ["inspect-grads", "-c", cfg, "--checkpoint", bad])
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_names_of_encoded_inputs_are_the_encodings_own():
    """checkpoint_checks names a scaling column of an encoded input as data.encoding does (io may not import
    data, so the rule is written twice; this holds the two equal)."""
    from backprop_cli.data.encoding import ColumnCode, Encoding
    from backprop_cli.io.checkpoint_checks import _encoded_names

    enc = Encoding([ColumnCode("bill", "number", "mean", indicator=True),
                    ColumnCode("island", "category", "category", levels=["Biscoe", "Dream", "<missing>"]),
                    ColumnCode("sex", "binary", "error", levels=["f", "m"]),
                    ColumnCode("city", "category", "error", levels=["a", "b"], encoding="embedding", embedding_size=2)])
    assert _encoded_names(enc.plain()) == enc.names() == [
        "bill", "bill_missing", "island=Biscoe", "island=Dream", "island=<missing>", "sex", "city"]
    assert _encoded_names({"columns": [{"name": 10**5000, "levels": []}]}) is None  # never formats a crafted value


def test_a_value_that_scales_beyond_float32_names_its_file_and_column(cli, penguins, tmp_path):
    """Statistics that are fine, data that is not: 3e38 under a std of 0.001 is inf in float32. predict and
    evaluate say so in one line (exit 2) instead of writing rows of empty probabilities."""
    from test_validation import FEATURES

    cfg, ckpt, _ = penguins
    bad = _crafted(ckpt, tmp_path, _put("data", "x_scaling", "std", 0, 0.001))
    rows = write(tmp_path / "big.csv", "species," + ",".join(FEATURES) + "\nAdelie,3e38,18.7,181,3750\n")
    for args in (["predict", "--checkpoint", bad, "--data", rows, "--out", tmp_path / "p.csv"],
                 ["evaluate", "--checkpoint", bad, "--data", rows]):
        r = cli(*args)
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith(f"error: {rows}: column 'bill_length_mm': a value is not finite in float32 once "
                                   "scaled (got 3.00000001e+38, mean 43."), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Warning" not in r.output
    assert not (tmp_path / "p.csv").exists()


def _outputs_doc() -> str:
    return " ".join((ROOT / "docs" / "outputs.md").read_text().split())


def test_the_checkpoint_format_section_names_every_key_and_the_evaluation_entry():
    """docs/outputs.md's table of checkpoint keys is the format's contract: every key a checkpoint may hold,
    and the evaluation entry's four keys, as checkpoint_checks accepts them."""
    from backprop_cli.io.checkpoint_checks import EVALUATION_KEYS, KNOWN_KEYS

    text = (ROOT / "docs" / "outputs.md").read_text()
    section = text[text.index("## Checkpoints"):text.index("## What backprop promises")]
    rows = [line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")]
    assert sorted(rows) == sorted(KNOWN_KEYS)
    row = next(line for line in section.splitlines() if line.startswith("| `evaluation`"))
    assert all(f'"{k}"' in row for k in EVALUATION_KEYS), row


def test_the_messages_the_docs_quote_are_the_checks_own(cli, penguins, tmp_path):
    """The examples of docs/outputs.md's 'checkpoints you give' are what the checks print."""
    from test_validation import FEATURES

    doc = _outputs_doc()
    _, ckpt, rows = penguins
    r = cli("predict", "--checkpoint", _crafted(ckpt, tmp_path, _put("data", "x_scaling", "std", 2, 1e-310)),
            "--data", rows)
    message = r.stderr.split("not a valid backprop checkpoint: ")[1].strip()
    head, tail = message.split(", as float32 holds it, ")
    assert f"`{head}, as float32 holds it, ... {tail[tail.index('(got'):]}`" in doc, message
    r = cli("predict", "--checkpoint", _crafted(ckpt, tmp_path, _put("step", "x")), "--data", rows)
    assert "step: expected an integer 0 … 1125899906842624 (got str 'x')" in r.stderr and \
        "step: expected an integer 0 … 1125899906842624 (got str 'x')" in doc
    r = cli("predict", "--checkpoint", _crafted(ckpt, tmp_path, _put("step", 10**400)), "--data", rows)
    assert "(got int <an integer of 1,329 bits>)" in r.stderr and "`<an integer of 1,329 bits>`" in doc
    big = write(tmp_path / "rows.csv", "species," + ",".join(FEATURES) + "\nAdelie,3e38,18.7,181,3750\n")
    r = cli("predict", "--checkpoint", _crafted(ckpt, tmp_path, _put("data", "x_scaling", "std", 0, 0.001)),
            "--data", big)
    message = r.stderr.removeprefix(f"error: {tmp_path}/").strip()
    assert f"`{message}`" in doc, message
