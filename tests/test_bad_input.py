"""A corpus of broken inputs: each is exit code 2 and one line naming the problem. Plus fuzzing."""

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backprop_cli.config import Config, load_config, validate
from backprop_cli.errors import ConfigError

GOOD = """\
seed: 0
model:
  input_size: 2
  hidden_size: 4
  output_size: 1
loss: mse
optimizer: {name: sgd, lr: 0.1}
data: {kind: synthetic, samples: 10, batch_size: 5}
train: {steps: 2}
"""
CSV_CFG = "model: {input_size: 2, hidden_size: 4, output_size: 1}\ndata: {kind: csv, path: d.csv, target: y, batch_size: 2}\n"


def sub(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


# (id, config text or None for "no file", CSV text or None, extra CLI args, expected fragment)
CORPUS = [
    ("top-level typo", GOOD.replace("model:", "modle:"), None, [], "modle: unknown key; did you mean model?"),
    ("nested typo", sub("hidden_size: 4", "hiden_size: 4"), None, [], "model.hiden_size: unknown key; did you mean hidden_size?"),
    ("size is a string", sub("hidden_size: 4", "hidden_size: four"), None, [], "model.hidden_size"),
    ("negative size", sub("input_size: 2", "input_size: -3"), None, [], "model.input_size: must be greater than 0"),
    ("zero size", sub("output_size: 1", "output_size: 0"), None, [], "model.output_size"),
    ("float size", sub("hidden_size: 4", "hidden_size: 4.5"), None, [], "not a float"),
    ("lr zero", sub("lr: 0.1", "lr: 0"), None, [], "optimizer.lr: must be greater than 0"),
    ("lr negative", sub("lr: 0.1", "lr: -0.1"), None, [], "optimizer.lr"),
    ("lr is text", sub("lr: 0.1", "lr: fast"), None, [], "optimizer.lr"),
    ("unknown activation", GOOD + "", None, ["--set", "model.activation=swish"], "unknown activation"),
    ("unknown loss", sub("loss: mse", "loss: hinge"), None, [], "unknown loss"),
    ("unknown optimizer", sub("name: sgd", "name: lion"), None, [], "unknown optimizer"),
    ("betas out of range", sub("name: sgd, lr: 0.1", "name: adam, betas: [0.9, 1.5]"), None, [], "optimizer.betas.1"),
    ("one beta", sub("name: sgd, lr: 0.1", "name: adam, betas: [0.9]"), None, [], "optimizer.betas"),
    ("option the optimizer lacks", sub("lr: 0.1", "lr: 0.1, betas: [0.9, 0.99]"), None, [], "allowed keys: name, lr, momentum"),
    ("nesterov without momentum", sub("lr: 0.1", "lr: 0.1, nesterov: true"), None, [], "nesterov needs momentum"),
    ("batch larger than data", sub("batch_size: 5", "batch_size: 50"), None, [], "data.batch_size"),
    ("steps is yes", sub("steps: 2", "steps: yes"), None, [], "not a boolean"),
    ("steps and epochs", sub("steps: 2", "steps: 2, epochs: 1"), None, [], "not both"),
    ("negative seed", sub("seed: 0", "seed: -1"), None, [], "seed"),
    ("unknown device", GOOD + "device: gpu\n", None, [], "device: expected auto, cpu, cuda, cuda:N or mps"),
    ("unavailable device", GOOD + "device: cuda:7\n", None, [], "not available"),
    ("class loss on regression targets", sub("loss: mse", "loss: cross_entropy").replace("output_size: 1", "output_size: 2"),
     None, [], "data.targets: loss cross_entropy needs data.targets: classes"),
    ("data kind missing", sub("kind: synthetic, ", ""), None, [], "data.kind: required key is missing"),
    ("unknown scheduler", GOOD + "scheduler: exponential\n", None, [], "unknown scheduler"),
    ("step schedule without step_size", GOOD + "scheduler: step\n", None, [], "scheduler.step_size: required"),
    ("clip at zero", sub("steps: 2", "steps: 2, clip_grad_norm: 0"), None, [], "train.clip_grad_norm"),
    ("empty YAML", "", None, [], "the file is empty"),
    ("comment-only YAML", "# nothing\n", None, [], "the file is empty"),
    ("YAML list", "- model\n- data\n", None, [], "expected a mapping of config sections"),
    ("YAML scalar", "hello\n", None, [], "expected a mapping of config sections"),
    ("tabs", "model:\n\tinput_size: 2\n", None, [], "YAML syntax error"),
    ("unclosed bracket", "model: {input_size: 2\n", None, [], "YAML syntax error"),
    ("duplicate key", GOOD + "seed: 3\n", None, [], "seed: duplicate key"),
    ("python tag", GOOD + "x: !!python/object/apply:os.system [ls]\n", None, [], "YAML syntax error"),
    ("missing config", None, None, [], "no such file"),
    ("bad --set", GOOD, None, ["--set", "optimizer.lr"], "expected KEY.PATH=VALUE"),
    ("bad --set value", GOOD, None, ["--set", "optimizer.lr=[1"], "cannot parse value"),
    ("--set through a number", GOOD, None, ["--set", "seed.x=1"], "seed is not a mapping"),
    ("missing CSV", CSV_CFG, None, [], "d.csv: no such file"),
    ("CSV with text cells", CSV_CFG, "a,b,y\n1,2,3\n4,five,6\n", [], "d.csv:3: column 'b': not a number (got 'five')"),
    ("ragged CSV", CSV_CFG, "a,b,y\n1,2,3\n4,5\n", [], "d.csv:3: row has 2 cells"),
    ("empty CSV", CSV_CFG, "", [], "d.csv: empty file"),
    ("CSV without the target", CSV_CFG, "a,b,z\n1,2,3\n", [], "column 'y' is not in the header"),
    ("semicolon CSV", CSV_CFG, "a;b;y\n1;2;3\n", [], "seems to separate columns with ';': set data.delimiter: ';'"),
    ("CSV shape mismatch", CSV_CFG, "a,b,c,y\n1,2,3,4\n5,6,7,8\n", [], "set model.input_size: auto (or 3)"),
    ("bad metrics path", GOOD, None, ["--metrics", "out.txt"], "must end in .jsonl or .csv"),
    ("resume from nothing", GOOD, None, ["--resume", "none.pt"], "no such checkpoint file"),
    ("resume from a text file", GOOD, "a,b\n", ["--resume", "d.csv"], "not a readable checkpoint"),
    # 10**13 hidden units: more than any address space, so the allocation fails under any overcommit policy
    ("a layer larger than memory", sub("hidden_size: 4", "hidden_size: 10000000000000"), None, [],
     "out of memory on the CPU (tried to allocate"),
]


@pytest.mark.parametrize("name,text,csv,args,fragment", CORPUS, ids=[c[0] for c in CORPUS])
def test_each_broken_input_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, name, text, csv, args, fragment):
    import torch

    if "cuda:7" in (text or "") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    if csv is not None:
        (tmp_path / "d.csv").write_text(csv)
    r = cli("train", "-c", path, *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [n for n, keep in (("c.yaml", text is not None), ("d.csv", csv is not None)) if keep])


@pytest.mark.parametrize("make,fragment", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"model: \xff\xfe\n"), "not a UTF-8 text file"),
    (lambda p: open(p, "wb").truncate(100 * 1024 * 1024), "file is too large (more than 1,000,000 bytes)"),
])
def test_files_that_are_not_configs(cli, tmp_path, make, fragment):
    path = tmp_path / "c.yaml"
    make(path)
    r = cli("train", "-c", path)
    assert r.exit_code == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_corpus_is_large_enough():
    assert len(CORPUS) + 3 >= 30


# --------------------------------------------------------------------------- fuzzing

KEYS = ["seed", "device", "model", "loss", "optimizer", "data", "train", "scheduler", "compare", "name", "lr",
        "input_size", "hidden_size", "output_size", "activation", "bias", "kind", "samples", "batch_size",
        "targets", "steps", "epochs", "log_every", "momentum", "betas", "path", "target", "delta", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True),
                    st.sampled_from(["relu", "sgd", "adam", "mse", "synthetic", "csv", "auto", "cpu", "teacher",
                                     "classes", "1e-3", "yes", ""]),
                    st.text(string.printable, max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=25)
overrides = st.lists(st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
                               st.text(string.printable, max_size=10)), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, sets=overrides)
def test_random_documents_and_overrides_give_a_config_or_a_config_error(tmp_path, doc, sets):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    specs = [".".join(keys) + "=" + value for keys, value in sets]
    try:
        cfg = load_config(path, specs)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and "\n" not in p for p in e.problems)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=300, deadline=None)
@given(text=st.text(string.printable, max_size=200))
def test_random_text_gives_a_config_or_a_config_error(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert e.exit_code == 2
        assert e.problems and all(isinstance(p, str) and p and "\n" not in p for p in e.problems), e.problems
    else:
        assert isinstance(cfg, Config)


def test_validated_configs_round_trip():
    cfg = validate(yaml.safe_load(GOOD))
    assert validate(cfg.plain()).plain() == cfg.plain()


def test_out_of_memory_messages_from_every_device():
    from backprop_cli.errors import ResourceError, known_error

    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)")
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB")
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 MB). "
                       "Tried to allocate 1.00 GB on private pool.")
    assert str(known_error(cpu)).startswith("out of memory on the CPU (tried to allocate 74.5 GiB); lower model")
    assert str(known_error(cuda)).startswith("out of memory on CUDA (tried to allocate 2.00 GiB)")
    assert str(known_error(mps)).startswith("out of memory on MPS (tried to allocate 1.00 GB)")
    assert isinstance(known_error(MemoryError()), ResourceError)
    assert known_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert known_error(ValueError("out of memory")) is None


def test_explain_refuses_non_finite_numbers(cli):
    r = cli("explain", "--w1", "nan", "--lr", "inf")
    assert r.exit_code == 2 and r.stderr.strip() == \
        "error: --w1 must be a finite number (got nan); --lr must be a finite number (got inf)"
