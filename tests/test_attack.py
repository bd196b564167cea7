"""Issue 16, "Survive an attack": hostile inputs and outputs give one error line (exit 2), never a
crash, a hang, unbounded memory or a lost file."""

import errno
import os
import socket
import subprocess
import sys
import threading

import pytest

from backprop_cli.errors import BackpropError, CheckpointError, ConfigError, DataError, OutputError
from backprop_cli.io.files import open_regular, read_text_capped
from conftest import ROOT, cli_in_a_new_process, write


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, text
    return text


# --------------------------------------------------------------------------- reading: files.py


def test_a_regular_file_is_read_with_its_bom_stripped(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes("\ufeffseed: 1\n".encode())
    assert read_text_capped(p, 100) == "seed: 1\n"
    p.write_bytes(b"seed: 1\n")
    assert read_text_capped(p, 100) == "seed: 1\n"


def test_the_cap_counts_bytes_read_not_the_size_the_file_claims(tmp_path):
    p = write(tmp_path / "c.yaml", "x" * 100)
    assert read_text_capped(p, 100) == "x" * 100
    with pytest.raises(ConfigError, match=r"c.yaml: config file is too large \(more than 99 bytes\)"):
        read_text_capped(p, 99, "config file")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_before_a_byte_is_read(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(DataError) as e:
        read_text_capped(device, 10**6, "CSV file", DataError)
    assert one_line(e.value) == f"{device}: is a character device, not a regular file; the CSV file must be a regular file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert _within(5, lambda: _error_of(lambda: open_regular(fifo, "config file"))) == \
        f"{fifo}: is a FIFO (named pipe), not a regular file; the config file must be a regular file"


def test_a_fifo_swapped_in_after_the_check_is_caught_on_what_was_opened(tmp_path, monkeypatch):
    """The race: stat sees a regular file, then a FIFO takes its place before open. O_NONBLOCK keeps
    the open from waiting, fstat refuses what was opened."""
    fifo, p = tmp_path / "fifo", write(tmp_path / "c.yaml", "seed: 1\n")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: real_stat(p if path == fifo else path, *a, **kw))
    assert "is a FIFO" in _within(5, lambda: _error_of(lambda: open_regular(fifo)))


def _within(seconds, call):
    """call() in a thread; fails if it is still running (blocked) after ``seconds``."""
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked"
    return outcome[0]


def _error_of(call):
    try:
        call()
    except BackpropError as e:
        return one_line(e)
    return None


def test_a_socket_and_a_directory_are_refused(tmp_path):
    sock_path = tmp_path / "s"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        assert _error_of(lambda: open_regular(sock_path, "config file")).startswith(f"{sock_path}: is a socket")
    finally:
        s.close()
    assert _error_of(lambda: open_regular(tmp_path, "config file")) == f"{tmp_path}: is a directory, not a config file"


def test_symlinks_are_followed_and_broken_ones_named_by_the_path_given(tmp_path):
    write(tmp_path / "real.csv", "a,y\n1,2\n")
    (tmp_path / "good.csv").symlink_to("real.csv")
    assert read_text_capped(tmp_path / "good.csv", 100) == "a,y\n1,2\n"
    (tmp_path / "dangling.csv").symlink_to("gone.csv")
    assert _error_of(lambda: open_regular(tmp_path / "dangling.csv", "CSV file", DataError)) == \
        f"{tmp_path / 'dangling.csv'}: is a symlink to 'gone.csv', which does not exist"
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    assert _error_of(lambda: open_regular(tmp_path / "loop.csv")) == \
        f"{tmp_path / 'loop.csv'}: symlink loop (too many levels of symbolic links)"
    assert _error_of(lambda: open_regular(tmp_path / "none.pt", "checkpoint file", CheckpointError)) == \
        f"{tmp_path / 'none.pt'}: no such checkpoint file"


def test_the_error_class_is_the_callers(tmp_path):
    for cls in (ConfigError, DataError, CheckpointError):
        with pytest.raises(cls):
            open_regular(tmp_path / "missing", error=cls)


def test_undecodable_bytes_are_named_by_offset(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"seed: 1\n\xff\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not a UTF-8 text file \(invalid start byte at byte 8\)"):
        read_text_capped(p, 100)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_is_one_line(tmp_path):
    p = write(tmp_path / "c.yaml", "seed: 1\n")
    p.chmod(0)
    assert _error_of(lambda: read_text_capped(p, 100)) == f"{p}: permission denied"


# --------------------------------------------------------------------------- writing: outputs.py

from backprop_cli.io.atomic import AtomicFile, write_atomic

from backprop_cli.io.metrics import MetricsWriter

from backprop_cli.io.paths import check_outputs, check_writable  # noqa: E402


class Full:
    """A file on a full disk: writes fail with ENOSPC once ``room`` bytes are used up."""

    def __init__(self, file, room):
        self._file, self.room = file, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.fixture
def disk_full(monkeypatch):
    """disk_full(part, room): files opened by AtomicFile whose temporary name contains ``part`` fail
    with ENOSPC after ``room`` bytes; other files are written normally."""
    def arm(part, room=0):
        real = os.fdopen

        def fdopen(fd, *a, **kw):
            f = real(fd, *a, **kw)
            return Full(f, room) if part in os.readlink(f"/proc/self/fd/{fd}") else f

        monkeypatch.setattr(os, "fdopen", fdopen)
    return arm


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("room", [0, 5000])
def test_a_full_disk_during_torch_save_names_the_cause_and_keeps_the_old_file(tmp_path, disk_full, room):
    """torch.save's zip writer turns the failed write into 'unexpected pos ...' (room=5000): the
    cause the user needs is still the disk."""
    import torch

    old = write(tmp_path / "c.pt", "old checkpoint")
    disk_full("c.pt", room)
    with pytest.raises(OutputError) as e:
        with AtomicFile(old, "wb") as f:
            torch.save({"w": torch.zeros(10_000)}, f.file)
    assert one_line(e.value) == f"{old}: cannot write: No space left on device"
    assert old.read_text() == "old checkpoint" and files_in(tmp_path) == ["c.pt"]


def test_a_full_disk_at_fsync_or_rename_keeps_the_old_file(tmp_path, monkeypatch):
    old = write(tmp_path / "p.json", "old")

    def no_space(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for where in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(os, where, no_space)
            with pytest.raises(OutputError, match=r"p.json: cannot write: No space left on device$"):
                write_atomic(old, lambda f: f.write("new"))
        assert old.read_text() == "old" and files_in(tmp_path) == ["p.json"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_full_disk_during_a_metrics_write_is_one_error_and_keeps_the_old_file(tmp_path, disk_full, suffix):
    old = write(tmp_path / f"m{suffix}", "previous run\n")
    disk_full(f"m{suffix}", room=300)
    writer = MetricsWriter(old, ["w"])
    record = {"step": 1, "loss": 1.0, "grad_norm": 1.0, "grad_norms": {"w": 1.0}, "lr": 0.1, "time": 0.0}
    with pytest.raises(OutputError) as e:  # records are written in batches: at the latest when closing
        for step in range(1, 100):
            writer.write({**record, "step": step})
        writer.close()
    assert one_line(e.value) == f"{old}: cannot write: No space left on device"
    with pytest.raises(OutputError):  # closing cannot pretend the file was written
        writer.close()
    writer.abort()
    assert old.read_text() == "previous run\n" and files_in(tmp_path) == [old.name]


def test_a_train_run_whose_metrics_hit_a_full_disk_ends_with_one_line(cli, tmp_path, disk_full):
    old = write(tmp_path / "m.jsonl", "previous run\n")
    disk_full("m.jsonl", room=2000)
    r = cli("train", "-c", ROOT / "configs" / "regression.yaml", "--steps", 30, "--metrics", old, "-q")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {old}: cannot write: No space left on device"
    assert old.read_text() == "previous run\n" and files_in(tmp_path) == ["m.jsonl"]


def test_a_real_write_failure_in_a_subprocess_save_is_one_line_and_keeps_the_old_checkpoint(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 4 KB (EFBIG): a real failure under torch.save."""
    import resource
    import signal

    old = tmp_path / "c.pt"
    old.write_bytes(b"old checkpoint")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = subprocess.run([sys.executable, "-m", "backprop_cli", "train", "-c", ROOT / "configs" / "regression.yaml",
                        "--steps", "2", "--save", old, "-q"], cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"error: {old}: cannot write: File too large"
    assert old.read_bytes() == b"old checkpoint" and files_in(tmp_path) == ["c.pt"]


def _special_files(tmp_path):
    """(path, kind) for a FIFO, a socket, a symlink to /dev/null and (where allowed) a device node."""
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "null-link").symlink_to("/dev/null")
    found = [("fifo", "a FIFO (named pipe)"), ("sock", "a socket"), ("null-link", "a character device")]
    try:
        import stat

        os.mknod(tmp_path / "mynull", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found.append(("mynull", "a character device"))
    except (PermissionError, OSError):
        pass
    return sock, found


def test_outputs_onto_a_device_fifo_or_socket_are_refused_and_left_alone(tmp_path):
    import stat

    sock, specials = _special_files(tmp_path)
    try:
        for name, kind in specials:
            path = tmp_path / name
            mode = os.stat(path).st_mode
            for attempt in (lambda: check_writable(path, what="checkpoint"),
                            lambda: write_atomic(path, lambda f: f.write("x"))):
                with pytest.raises(OutputError) as e:
                    attempt()
                assert one_line(e.value).startswith(f"{path}: is {kind}, not a regular file"), e.value
            assert stat.S_IFMT(os.stat(path).st_mode) == stat.S_IFMT(mode)
        assert not [n for n in files_in(tmp_path) if n.endswith(".tmp")]
    finally:
        sock.close()


def test_a_path_that_becomes_a_fifo_while_writing_is_not_replaced(tmp_path):
    path = tmp_path / "out.json"
    f = AtomicFile(path)
    f.file.write("{}")
    os.mkfifo(path)
    with pytest.raises(OutputError, match="is a FIFO"):
        f.commit()
    assert os.path.exists(path) and not os.path.isfile(path) and files_in(tmp_path) == ["out.json"]


def test_train_save_onto_a_device_node_is_refused(cli, tmp_path):
    (tmp_path / "mynull").symlink_to("/dev/null")
    r = cli("train", "-c", ROOT / "configs" / "seed.yaml", "--steps", 2, "--save", tmp_path / "mynull")
    assert r.exit_code == 2 and "is a character device, not a regular file" in r.stderr
    assert os.path.islink(tmp_path / "mynull") and os.readlink(tmp_path / "mynull") == "/dev/null"


def test_a_symlinked_output_is_written_through_and_the_link_kept(tmp_path):
    (tmp_path / "real").mkdir()
    target = write(tmp_path / "real" / "m.json", "old")
    (tmp_path / "link.json").symlink_to(target)
    write_atomic(tmp_path / "link.json", lambda f: f.write("new"))
    assert os.path.islink(tmp_path / "link.json") and target.read_text() == "new"
    assert files_in(tmp_path / "real") == ["m.json"]


def test_check_outputs_refuses_an_output_on_an_input(tmp_path):
    cfg = write(tmp_path / "s.yaml", "seed: 0\n")
    data = write(tmp_path / "d.csv", "a,y\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.yaml").symlink_to("s.yaml")
    os.link(data, tmp_path / "hard.csv")
    inputs = {"--config": cfg, "data.path": data, "--resume": None}
    for role, out, same in [("--save", cfg, "--config"), ("--save", tmp_path / "sub" / ".." / "s.yaml", "--config"),
                            ("--metrics", tmp_path / "alias.yaml", "--config"), ("--save", tmp_path / "hard.csv", "data.path")]:
        with pytest.raises(OutputError) as e:
            check_outputs({role: out}, inputs)
        assert one_line(e.value) == f"{role} {out}: is the same file as {same} {inputs[same]}; choose another path"
    check_outputs({"--save": tmp_path / "c.pt", "--metrics": tmp_path / "m.jsonl", "--plot": None}, inputs)


SPELLINGS = {  # ways to name a file: name -> a function of the folder
    "a": lambda d: d / "a", "./a": lambda d: d / "." / "a", "sub/../a": lambda d: d / "sub" / ".." / "a",
    "link-to-a": lambda d: d / "la", "hard-link-to-a": lambda d: d / "ha", "dirlink/../a": lambda d: d / "ld" / ".." / "a",
    "new-in-dirlink": lambda d: d / "ld" / "n", "sub/n": lambda d: d / "sub" / "n", "b": lambda d: d / "b",
    "link-to-b": lambda d: d / "lb", "new": lambda d: d / "n",
}


@pytest.fixture(scope="module")
def spelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("spell")
    write(d / "a", "a")
    write(d / "b", "b")
    (d / "sub").mkdir()
    (d / "la").symlink_to("a")
    (d / "lb").symlink_to(d / "b")
    os.link(d / "a", d / "ha")
    (d / "ld").symlink_to("sub")
    return d


def _identity(path):
    """What a path really names: the inode of an existing file, else the resolved path."""
    return (os.stat(path).st_dev, os.stat(path).st_ino) if os.path.exists(path) else os.path.realpath(path)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@pytest.mark.parametrize("args,fragment", [
    (["train", "-c", "s.yaml", "--save", "s.yaml"], "--save s.yaml: is the same file as --config"),
    (["train", "-c", "c.yaml", "--metrics", "data/houses.csv"], "--metrics data/houses.csv: is the same file as data.path"),
    (["train", "-c", "c.yaml", "--save", "./data/../data/houses.csv"], "is the same file as data.path"),
    (["train", "-c", "s.yaml", "--metrics", "x.csv", "--save", "x.csv"], "--save x.csv: is the same file as --metrics"),
    (["train", "-c", "s.yaml", "--resume", "ck.pt", "--tensorboard", "ck.pt"], "--tensorboard ck.pt: is the same file as --resume"),
    (["compare-optimizers", "-c", "c.yaml", "--metrics", "data/houses.csv"], "is the same file as data.path"),
    (["compare-optimizers", "-c", "s.yaml", "--plot", "s.png", "--metrics", "m.csv"], None),
    (["inspect-grads", "-c", "s.yaml", "--checkpoint", "ck.pt", "--out", "ck.pt"], "--out ck.pt: is the same file as --checkpoint"),
    (["inspect-grads", "-c", "s.yaml", "--out", "link.json"], "is the same file as --config"),
    (["plot", "m.jsonl", "--out", "m-link.png"], "--out m-link.png: is the same file as METRICS m.jsonl"),
    (["find-lr", "-c", "c.yaml", "--plot", "houses-link.png"], "--plot houses-link.png: is the same file as data.path"),
    (["predict", "--checkpoint", "ck.pt", "--data", "data/houses.csv", "--out", "./data/houses.csv"],
     "--out data/houses.csv: is the same file as --data"),
    (["predict", "--checkpoint", "ck.pt", "--data", "data/houses.csv", "--out", "ck-link.csv"],
     "--out ck-link.csv: is the same file as --checkpoint"),
])
def test_no_command_writes_onto_its_inputs(cli, tmp_path, monkeypatch, args, fragment):
    """Issue 16, item 4: refused before any work, exit 2, every file as it was (symlinks and .. too)."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "configs" / "seed.yaml", "s.yaml")
    shutil.copy(ROOT / "configs" / "csv.yaml", "c.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "configs" / "data" / "houses.csv", "data/houses.csv")
    assert cli("train", "-c", "s.yaml", "--save", "ck.pt", "-q").exit_code == 0
    os.symlink("s.yaml", "link.json")
    write(tmp_path / "m.jsonl", '{"step": 1, "loss": 1.0}\n')
    for link, target in (("m-link.png", "m.jsonl"), ("houses-link.png", "data/houses.csv"), ("ck-link.csv", "ck.pt")):
        os.symlink(target, link)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = cli(*args)
    if fragment is None:  # distinct outputs: the run is fine
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_resume_may_save_back_to_its_own_checkpoint(cli, tmp_path):
    ck = tmp_path / "ck.pt"
    assert cli("train", "-c", REGRESSION, "--steps", 5, "--save", ck, "-q").exit_code == 0
    r = cli("train", "-c", REGRESSION, "--steps", 8, "--resume", ck, "--save", ck, "-q")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(ck)["step"] == 8


@settings(max_examples=80, deadline=None)
@given(out=st.sampled_from(sorted(SPELLINGS)), other=st.sampled_from(sorted(SPELLINGS)), as_input=st.booleans())
def test_check_outputs_refuses_exactly_the_spellings_of_one_file(spelled, out, other, as_input):
    """Path collisions however spelled (symlinks to files or folders, '..', hard links, new paths):
    refused exactly when the two name one file."""
    a, b = SPELLINGS[out](spelled), SPELLINGS[other](spelled)
    outputs, inputs = ({"--save": a}, {"--config": b}) if as_input else ({"--metrics": b, "--save": a}, {})
    same = _identity(a) == _identity(b)
    try:
        check_outputs(outputs, inputs)
    except OutputError as e:
        assert same, (out, other, str(e))
        assert one_line(e).endswith("; choose another path")
    else:
        assert not same, (out, other)


def test_check_outputs_refuses_two_outputs_on_one_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError) as e:
        check_outputs({"--metrics": "x.csv", "--save": tmp_path / "x.csv"}, {"--config": tmp_path / "s.yaml"})
    assert one_line(e.value) == f"--save {tmp_path / 'x.csv'}: is the same file as --metrics x.csv; choose another path"


# --------------------------------------------------------------------------- crafted checkpoints

import zipfile  # noqa: E402

import torch  # noqa: E402

from backprop_cli.io.checkpoint import checkpoint_size_check, expected_checkpoint_bytes, load_checkpoint  # noqa: E402

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
    assert _within(10, lambda: _error_of(lambda: load_checkpoint(fifo))) == \
        f"{fifo}: is a FIFO (named pipe), not a regular file; the checkpoint file must be a regular file"


# --------------------------------------------------------------------------- a failed run's checkpoint


def _run_state():
    from backprop_cli.core.build import build_run
    from backprop_cli.config import load_config

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


# --------------------------------------------------------------------------- --threads


def test_threads_beyond_four_per_core_are_one_line_not_an_abort(cli, monkeypatch):
    """Issue 16, item 11: 20000 aborted in libgomp, 100000 segfaulted."""
    import backprop_cli.runs.distributed as distributed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail(f"torch was asked for {n} threads"))
    for n in (20000, 100000, 9):
        with pytest.raises(BackpropError) as e:
            distributed.set_threads(n)
        assert one_line(e.value) == f"--threads {n}: at most 8 on this machine (4 × 2 cores)"
    r = cli("train", "-c", REGRESSION, "--steps", 2, "--threads", 20000)
    assert r.exit_code == 2 and r.stderr.strip() == "error: --threads 20000: at most 8 on this machine (4 × 2 cores)"


@pytest.mark.parametrize("value", ["20000", "100000", "9", "9,2", "1" * 5000])
def test_omp_num_threads_beyond_the_bound_is_one_line(cli, monkeypatch, value):
    """OMP_NUM_THREADS is held to --threads' bound (4 × the cores)."""
    import backprop_cli.runs.distributed as distributed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    shown = value if len(value) <= 20 else value[:17] + "..."
    line = f"OMP_NUM_THREADS={shown}: at most 8 on this machine (4 × 2 cores); lower it or unset it"
    with pytest.raises(BackpropError) as e:
        distributed.set_threads(None)
    assert one_line(e.value) == line
    r = cli("train", "-c", SEED, "--steps", 1)
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {line}"
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert distributed.set_threads(None).endswith("(OMP_NUM_THREADS=8)")


def test_cuda_rng_states_this_machine_cannot_use_name_the_checkpoint(monkeypatch):
    from backprop_cli.io.checkpoint import restore_rng

    def refuse(states):
        raise RuntimeError("Invalid device index\nmore")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    with pytest.raises(CheckpointError) as e:
        restore_rng({"rng": {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 3}}, "runs/ck.pt")
    assert one_line(e.value).startswith("runs/ck.pt: rng.cuda: not CUDA RNG states this machine can use (")


def test_threads_within_the_bound_are_set(monkeypatch):
    import backprop_cli.runs.distributed as distributed

    asked = []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    distributed.set_threads(8)
    distributed.set_threads(1)
    assert asked == [8, 1]


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("name", ["a\nmodel: 1\n#.yaml", "a\rb.yaml", "a\u2028b.yaml", "a\x1bb.yaml", "a\tb.yaml"])
def test_init_refuses_a_name_that_would_write_yaml_and_leaves_nothing(cli, tmp_path, monkeypatch, name):
    """Issue 16, item 20: the name went into the file's comments, its newline started YAML of its own."""
    monkeypatch.chdir(tmp_path)
    r = cli("init", name)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: init {name!r}: the path has a control or non-printable character ({name[1]!r} at position 1); "
        "choose a name without one"]
    assert files_in(tmp_path) == []


def test_init_refuses_a_csv_path_with_a_line_break(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d\n.csv", "a,y\n1,2\n3,4\n")
    r = cli("init", "c.yaml", "--csv", "d\n.csv")
    assert r.exit_code == 2 and "error: --csv 'd\\n.csv': the path has a control" in r.stderr
    assert files_in(tmp_path) == ["d\n.csv"]


def test_a_starter_that_does_not_validate_is_never_written(cli, tmp_path, monkeypatch):
    import backprop_cli.config.starter as starter

    monkeypatch.chdir(tmp_path)
    real = starter.starter_config
    monkeypatch.setattr(starter, "starter_config", lambda *a: ("model: 1\n", "broken"))
    r = cli("init", "c.yaml")
    assert r.exit_code == 2 and r.stderr.startswith("error: c.yaml")
    assert files_in(tmp_path) == []
    monkeypatch.setattr(starter, "starter_config", real)
    assert cli("init", "c.yaml").exit_code == 0 and files_in(tmp_path) == ["c.yaml"]


# --------------------------------------------------------------------------- bounded config: YAML, --set, integers

import math  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402

from backprop_cli.config import load_config, load_text, parse_optimizer  # noqa: E402
from backprop_cli.limits import MAX_COUNT, MAX_SEED  # noqa: E402

SEED = ROOT / "configs" / "seed.yaml"


def laughs(depth: int) -> str:
    """The "billion laughs": each anchor is a list of nine aliases of the one before (9**depth values)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\nmodel: {{input_size: 2, hidden_size: *a{depth - 1}, output_size: 1}}\n"


def config_error(call, seconds=20) -> list[str]:
    """The problems of the ConfigError that ``call`` raises, within ``seconds`` (an attack that takes
    minutes or all the memory is the defect); each problem one short line."""
    def attempt():
        try:
            call()
        except ConfigError as e:
            return e.problems
        except RecursionError:  # pragma: no cover - the defect itself
            return "RecursionError"
        return None

    problems = _within(seconds, attempt)
    assert isinstance(problems, list), problems
    for line in problems:
        assert "\n" not in line and len(line) < 400, line
    return problems


@pytest.mark.parametrize("depth", [7, 10])
def test_a_billion_laughs_is_refused_at_once(tmp_path, depth):
    """Issue 16, item 8: 604 bytes took 15 s at depth 7 and all the memory at depth 10."""
    p = write(tmp_path / "laughs.yaml", laughs(depth))
    assert p.stat().st_size < 700
    assert config_error(lambda: load_config(p)) == [
        f"{p}:1: the document expands to more than 10,000 values (aliases that repeat aliases?); "
        "a config is far smaller"]


def test_an_alias_inside_itself_is_refused(tmp_path):
    p = write(tmp_path / "c.yaml", "seed: &a [*a]\n")
    assert config_error(lambda: load_config(p)) == [f"{p}:1: seed.0: an alias refers to a value that contains it"]
    m = write(tmp_path / "m.yaml", "model: &m {input_size: 2, output_size: 1, hidden_size: 3, <<: *m}\n")
    assert config_error(lambda: load_config(m)) == [f"{m}:1: model.<<: an alias refers to a value that contains it"]


def _deep(style: str, depth: int) -> str:
    if style == "flow":
        return "seed: " + "[" * depth + "]" * depth + "\n"
    if style == "block-mapping":  # one space of indentation per level: 5,000 levels in 13 MB otherwise
        return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "1\n"
    return "seed:\n" + "".join(" " * (i + 1) + "-\n" for i in range(depth)) + " " * (depth + 1) + "1\n"


@pytest.mark.parametrize("style", ["flow", "block-mapping", "block-sequence"])
@pytest.mark.parametrize("depth", [40, 500, 1200])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, style, depth):
    p = write(tmp_path / "c.yaml", _deep(style, depth))
    (line,) = config_error(lambda: load_config(p))
    assert line.startswith(f"{p}") and ("nested more than 32 levels deep" in line or "YAML nests too deeply" in line)


@pytest.mark.parametrize("value,fragment", [
    ("&a [*a]", "an alias refers to a value that contains it"),
    ("[" * 500 + "]" * 500, "YAML nests too deeply"),
    ("[" * 40 + "]" * 40, "nested more than 32 levels deep"),
    ("{" + laughs(10).replace("\n", ", ").rstrip(", ") + "}", "expands to more than 10,000 values"),
    ("1" * 5000, "an integer of 5,000 characters"),
], ids=["alias-in-itself", "500-deep", "40-deep", "billion-laughs", "5000-digits"])
def test_set_and_optimizer_values_are_bounded_like_the_file(value, fragment):
    """--set and --optimizer values are YAML too: the same bounds, and the value shown shortened."""
    (line,) = config_error(lambda: load_config(SEED, [f"seed={value}"]))
    assert line.startswith("--set seed: cannot parse value ") and fragment in line and len(line) < 250, line
    (line,) = config_error(lambda: parse_optimizer(f"sgd:lr={value}"))
    assert line.startswith("--optimizer sgd:lr=") and "optimizer.lr: cannot parse" in line and len(line) < 250, line


@pytest.mark.parametrize("literal", ["1" * 5000, "0x" + "f" * 5000, "0b" + "1" * 50000, "1_" + "0" * 5000,
                                     "1:" * 5000 + "1", "-" + "9" * 101])
def test_an_integer_literal_too_long_to_convert_is_one_line(tmp_path, literal):
    """Python refuses to turn an integer of over 4,300 digits into text (ValueError, a traceback): such a
    literal is refused before it becomes an integer, with its line."""
    p = write(tmp_path / "c.yaml", SEED.read_text().replace("seed: 0", f"seed: {literal}"))
    (line,) = config_error(lambda: load_config(p))
    assert line.startswith(f"{p}:3: seed: an integer of {len(literal):,} characters; a config takes integers "
                           "of at most 100 (got "), line


def test_long_keys_and_odd_list_indexes_in_set_are_one_short_line():
    (line,) = config_error(lambda: load_config(SEED, ["k" * 3000 + "=1"]))
    assert line.startswith("--set: kkkk") and "...: unknown key" in line and len(line) < 300
    for key in ("model.hidden_sizes." + "1" * 5000, "model.hidden_sizes.²"):
        (line,) = config_error(lambda: load_config(SEED, [f"{key}=3"]))
        assert line.startswith("--set: model.hidden_sizes: must be a valid list") and len(line) < 300, line
    (line,) = config_error(lambda: parse_optimizer("k" * 3000))
    assert "optimizer.name: unknown optimizer" in line and len(line) < 300


def _union_members(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is typing.Union:
        return [m for a in typing.get_args(tp) for m in _union_members(a)]
    return [tp]


def integer_keys(model=None, path=(), tags=()):
    """Every integer key of the config schema, found by walking it (a new one is covered without a
    change here): ``(key path, [(tag path, tag), ...])``, the tags that select its union member."""
    from pydantic import BaseModel

    from backprop_cli.config import Config

    out = []
    for name, field in (model or Config).model_fields.items():
        for tp in _union_members(field.annotation):
            inner = _union_members(typing.get_args(tp)[0]) if typing.get_origin(tp) is list else []
            where = path + (name, 0) if inner else path + (name,)
            for sub in inner or [tp]:
                if sub is int:
                    out.append((where, tags))
                elif isinstance(sub, type) and issubclass(sub, BaseModel):
                    tag = next(((k, typing.get_args(sub.model_fields[k].annotation)[0]) for k in ("name", "kind")
                                if k in sub.model_fields
                                and typing.get_origin(sub.model_fields[k].annotation) is typing.Literal), None)
                    out += integer_keys(sub, where, tags + (((where + (tag[0],)), tag[1]),) if tag else tags)
    return out


INTEGER_KEYS = integer_keys()


def test_the_schema_walk_finds_the_integer_keys():
    found = {".".join(map(str, k)) for k, _ in INTEGER_KEYS}
    assert {"seed", "model.input_size", "model.hidden_sizes.0", "data.batch_size", "data.samples", "train.steps",
            "train.log_every", "train.max_skips", "scheduler.step_size", "scheduler.T_max",
            "scheduler.warmup_steps"} <= found


@pytest.mark.parametrize("key,tags", INTEGER_KEYS, ids=[".".join(map(str, k)) + "/" + "/".join(t for _, t in tags)
                                                        for k, tags in INTEGER_KEYS])
@pytest.mark.parametrize("huge", [10**20, 2**64, MAX_COUNT + 1])
def test_every_integer_key_refuses_a_huge_value_in_one_line(cli, key, tags, huge):
    """Issue 16, item 12: --set model.input_size=10^20 was a 106-line TypeError from torch."""
    dotted = ".".join(map(str, key))
    sets = [f"{'.'.join(map(str, p))}={t}" for p, t in tags] + [f"{dotted}={huge}"]
    if key[-1] == 0:
        sets[-1] = f"{dotted[:-2]}=[{huge}]"
    r = cli("config", "validate", "-c", SEED, *[a for s in sets for a in ("--set", s)])
    bound = MAX_SEED if key in (("seed",), ("data", "split_seed")) else MAX_COUNT  # seeds: torch's seed range
    if huge <= bound:
        return
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"error: --set: {dotted}: must be less than or equal to {bound} (got {huge})" in r.stderr.splitlines()


COUNT_OPTIONS = [
    ["train", "-c", SEED, "--steps"], ["train", "-c", SEED, "--epochs"], ["train", "-c", SEED, "--log-every"], ["train", "-c", SEED, "--save-every"],
    ["compare-optimizers", "-c", SEED, "--steps"], ["compare-optimizers", "-c", SEED, "--seeds"],
    ["inspect-grads", "-c", SEED, "--batch"], ["inspect-grads", "-c", SEED, "--train-steps"],
    ["check-grads", "-c", SEED, "--samples"], ["explain", "--updates"], ["find-lr", "-c", SEED, "--steps"],
]


@pytest.mark.parametrize("args", COUNT_OPTIONS, ids=[" ".join(map(str, a[:1] + a[-1:])) for a in COUNT_OPTIONS])
def test_count_options_refuse_huge_values_before_any_work(cli, args):
    """A huge --steps, --seeds, ... is refused as the option's own error (exit 2), before torch runs."""
    r = cli(*args, 10**20)
    text = " ".join(r.output.replace("│", " ").split())  # typer's usage error is boxed
    assert r.exit_code == 2 and "Traceback" not in text, text
    assert f"Invalid value for '{args[-1]}'" in text and "less than or equal to" in text \
        or f"error: {args[-1]}: must be at most {MAX_COUNT}" in text, text


@pytest.mark.parametrize("spec,line", [
    ("foo.bar.baz=1", "error: --set: foo: unknown key; allowed keys: seed, device"),
    ("model.layers.0=5", "error: --set: model.layers: unknown key; allowed keys: input_size"),
    ("optimizer.lr.x=5", "error: --set optimizer.lr.x: optimizer.lr is not a mapping (got 0.01)"),
])
def test_a_key_only_set_wrote_is_blamed_on_set_not_the_file(cli, spec, line):
    """Issue 16, item 19: these were blamed on the config file (s.yaml:5)."""
    r = cli("config", "validate", "-c", SEED, "--set", spec)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(line), r.stderr
    assert "seed.yaml" not in r.stderr


# YAML alias graphs (hypothesis): anchors holding scalars, nested collections, aliases of earlier anchors
# or of themselves, merge keys; every document ends in a Config or one ConfigError, in bounded time.

SCALARS = ["1", "2", "0.5", "lol", "true", "null", "[]", "{}", "-3", "1e-3"]


@st.composite
def alias_graphs(draw):
    cycles = draw(st.integers(0, 3)) == 0  # a quarter of the documents may refer to an anchor inside itself

    def ref(i):  # an earlier anchor, or (with cycles) now and then a{i} itself: the anchor being defined
        return i if i == 0 or (cycles and draw(st.integers(0, 9)) == 0) else draw(st.integers(0, i - 1))

    def value(i, depth):
        # an anchor's own value is no alias (``&a *b`` is not YAML)
        kind = draw(st.sampled_from([0, 2, 3, 4, 5, 6, 6] if depth == 0 else [0, 1, 2, 3, 4, 5, 6] if depth < 3
                                    else [0, 1]))
        if kind in (1, 4, 6) and i == 0 and not cycles:
            kind = 2  # a0 has no earlier anchor to refer to
        if kind == 6:  # fan-out: a list of aliases (nine of the anchor before, each level: a billion laughs)
            return "[" + ", ".join(f"*a{ref(i)}" for _ in range(draw(st.integers(2, 9)))) + "]"
        if kind == 0:
            return draw(st.sampled_from(SCALARS))
        if kind == 1:
            return f"*a{ref(i)}"
        if kind == 5:  # nesting in flow style, now and then past the limit of 32 levels
            levels = draw(st.sampled_from([1, 2, 3, 33]))
            return "[" * levels + value(i, depth + 1) + "]" * levels
        items = [value(i, depth + 1) for _ in range(draw(st.integers(0, 9 if depth == 0 else 3)))]
        if kind == 2:
            return "[" + ", ".join(items) + "]"
        pairs = [f"k{j}: {v}" for j, v in enumerate(items)]
        if kind == 4:  # merge: one alias or a list of them
            refs = [f"*a{ref(i)}" for _ in range(draw(st.integers(1, 3)))]
            pairs.insert(0, f"<<: {refs[0] if len(refs) == 1 else '[' + ', '.join(refs) + ']'}")
        return "{" + ", ".join(pairs) + "}"

    count = draw(st.integers(1, 8))
    lines = [f"a{i}: &a{i} {value(i, 0)}" for i in range(count)]
    use = lambda: f"*a{draw(st.integers(0, count - 1))}"  # noqa: E731
    body = {"model": f"{{input_size: 2, hidden_size: {use()}, output_size: 1}}",
            "train": f"{{steps: {use()}}}", "optimizer": f"{{<<: {use()}, name: sgd}}", "seed": use()}
    chosen = draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=4, unique=True))
    return "\n".join(lines + [f"{k}: {body[k]}" for k in chosen]) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=alias_graphs())
def test_alias_graphs_end_in_one_config_error_in_bounded_time(doc):
    started = time.perf_counter()
    problems = config_error(lambda: load_text(doc, "g.yaml"))
    assert problems and all(line.startswith("g.yaml") for line in problems), problems
    assert time.perf_counter() - started < 10


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.fixed_dictionaries({k: st.sampled_from([1, 2, 3, 4, 8]) for k in
                                     ("input", "hidden", "output", "samples", "steps", "log")}),
       batch=st.sampled_from([1, 2, 3]), merge=st.booleans())
def test_aliases_in_a_valid_config_mean_the_values_they_name(values, batch, merge):
    """The oracle: the same config with every repeated value written out."""
    batch = min(batch, values["samples"])
    anchors: dict = {}

    def v(x):
        if x in anchors:
            return f"*v{x}"
        anchors[x] = True
        return f"&v{x} {x}"

    def text(val):  # val() is called in the order of the document: an anchor comes before its aliases
        out = f"seed: {val(values['log'])}\nmodel: "
        if merge:
            out += f"{{<<: &base {{input_size: {val(values['input'])}, output_size: {val(values['output'])}}}, "
        else:
            out += f"{{input_size: {val(values['input'])}, output_size: {val(values['output'])}, "
        out += f"hidden_size: {val(values['hidden'])}}}\n"
        out += f"data: {{kind: synthetic, samples: {val(values['samples'])}, batch_size: {val(batch)}}}\n"
        return out + f"train: {{steps: {val(values['steps'])}, log_every: {val(values['log'])}}}\n"

    aliased = load_text(text(v), "a.yaml")
    assert aliased.plain() == load_text(text(str), "a.yaml").plain()
    assert (aliased.model.input_size, aliased.train.steps, aliased.data.batch_size) == \
        (values["input"], values["steps"], batch)


# --------------------------------------------------------------------------- non-finite numbers: JSON and explain

import json  # noqa: E402


def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))


def explain_oracle(x, y, w1, w2, lr, steps):
    """The SGD updates of the two-weight example in plain floats: (losses, first step not finite)."""
    losses = []
    for step in range(1, steps + 1):
        r = y - w2 * w1 * x
        g1, g2 = -r * w2 * x, -r * w1 * x
        losses.append(0.5 * r * r)
        w1, w2 = w1 - lr * g1, w2 - lr * g2
        after = 0.5 * (y - w2 * w1 * x) * (y - w2 * w1 * x)
        if not all(math.isfinite(v) for v in (losses[-1], g1, g2, w1, w2, after)):
            return losses, step
    return losses, None


def test_explain_reports_divergence_as_a_result_not_a_traceback(cli):
    """Issue 16, item 13: --lr 10 --steps 2000 raised OverflowError, in the table and in JSON."""
    losses, at = explain_oracle(2.0, 1.0, 0.5, 0.3, 10.0, 2000)
    assert at is not None and at < 20
    r = cli("explain", "--lr", 10, "--steps", 2000, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = strict_json(r.stdout)
    assert doc["diverged_at"] == at and len(doc["history"]) == at
    assert [h["loss"] for h in doc["history"]][:-1] == pytest.approx(losses[:-1], rel=1e-12)
    assert doc["history"][-1]["loss_after"] is None  # inf, written as null
    r = cli("explain", "--lr", 10, "--steps", 2000)
    assert r.exit_code == 0 and f"diverged at step {at}: " in " ".join(r.stdout.split())
    doc = strict_json(cli("explain", "--steps", 50, "--format", "json").stdout)
    assert doc["diverged_at"] is None and len(doc["history"]) == 50


def test_explain_with_numbers_past_a_float_writes_null(cli):
    r = cli("explain", "--x", 1e308, "--w1", 1e308, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = strict_json(r.stdout)
    assert doc["forward"]["z1"] is None and doc["forward"]["loss"] is None and doc["diverged_at"] == 1
    r = cli("explain", "--x", 1e308, "--w1", 1e308)
    assert r.exit_code == 0 and "is past what a float holds" in r.stdout


def test_check_grads_json_of_an_overflowing_loss_is_null(cli):
    """Issue 16, item 13: 'Out of range float values are not JSON compliant'."""
    r = cli("check-grads", "-c", SEED, "--set", "data.targets=teacher", "--set", "data.noise=1e30", "--format", "json")
    assert r.exit_code in (0, 1), r.output
    assert strict_json(r.stdout)["loss"] is None


@pytest.mark.parametrize("clip", ["inf", "nan", "-inf", "0", "-1"])
def test_inspect_grads_clip_takes_a_finite_positive_number_as_the_config_does(cli, clip):
    r = cli("inspect-grads", "-c", SEED, "--clip", clip, "--format", "json")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: --clip: must be a finite number greater than 0 (got {float(clip):g})"


# --------------------------------------------------------------------------- outputs that fail: every kind, one line

ENOSPC = os.strerror(errno.ENOSPC)


def _no_space(*a, **kw):
    raise OSError(errno.ENOSPC, ENOSPC)


@pytest.fixture
def tb_full(monkeypatch):
    """TensorBoard's event writer (a thread of its own) on a disk that is full after 60 events."""
    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer import record_writer

    real, written = record_writer.RecordWriter.write, []

    def write(self, data):
        written.append(len(data))
        if len(written) > 60:
            _no_space()
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)


def test_tensorboard_on_a_full_disk_is_one_line_and_the_other_outputs_are_written(cli, tmp_path, tb_full):
    """Issue 16, item 14: a traceback from TensorBoard's writer thread; now one line, and --metrics and
    --save are still written (up to the step whose TensorBoard write failed)."""
    tb, m, ck = tmp_path / "tb", tmp_path / "m.jsonl", tmp_path / "c.pt"
    r = cli("train", "-c", REGRESSION, "--steps", 30, "-q", "--tensorboard", tb, "--metrics", m, "--save", ck)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [f"error: {tb}: cannot write: {ENOSPC}"]
    assert "Exception in thread" not in r.output and "Traceback" not in r.output
    steps = [json.loads(line)["step"] for line in m.read_text().splitlines()]
    assert steps and steps == list(range(1, len(steps) + 1)) and steps[-1] < 30
    assert load_checkpoint(ck)["step"] == steps[-1]


def _read_only(folder: str) -> bool:
    """Whether even root cannot create a folder in ``folder`` (a read-only or virtual file system)."""
    try:
        os.mkdir(os.path.join(folder, "backprop-probe"))
    except OSError:
        return os.path.isdir(folder)
    os.rmdir(os.path.join(folder, "backprop-probe"))
    return False


@pytest.mark.skipif(not _read_only("/sys"), reason="needs a folder nobody can write: /sys")
def test_tensorboard_in_a_read_only_folder_is_one_line(cli, tmp_path):
    """A real read-only folder (root ignores permissions, not a read-only file system): /sys."""
    pytest.importorskip("tensorboard")
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", SEED, "--steps", 2, "--tensorboard", "/sys/backprop-tb", "--metrics", m)
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: /sys/backprop-tb: ") and "Traceback" not in r.output
    assert not os.path.exists("/sys/backprop-tb") and files_in(tmp_path) == []  # no temporary metrics file


@pytest.mark.parametrize("make,kind", [(lambda p: write(p, "x"), "a file"), (None, "a character device")])
def test_tensorboard_onto_a_file_or_device_is_refused_before_any_work(cli, tmp_path, monkeypatch, make, kind):
    path = tmp_path / "tb"
    if make is None:
        path.symlink_to("/dev/null")
    else:
        make(path)
    import backprop_cli.runs.training as training

    monkeypatch.setattr(training, "run_training", lambda *a, **k: pytest.fail("the run started"))
    r = cli("train", "-c", SEED, "--tensorboard", path)
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {path}: is {kind}, not a folder; the TensorBoard folder must be a folder or a new path"


def test_an_output_that_fails_at_the_end_loses_only_itself(cli, tmp_path, monkeypatch):
    """--metrics fails as it is put in place (fsync: disk full): --save and --plot are still written."""
    m, ck, png = tmp_path / "m.jsonl", tmp_path / "c.pt", tmp_path / "p.png"
    real = os.fsync

    def fsync(fd):
        if "m.jsonl" in os.readlink(f"/proc/self/fd/{fd}"):
            _no_space()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    r = cli("train", "-c", SEED, "--steps", 3, "-q", "--metrics", m, "--save", ck, "--plot", png)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [f"error: {m}: cannot write: {ENOSPC}"]
    assert load_checkpoint(ck)["step"] == 3 and png.read_bytes().startswith(b"\x89PNG")
    assert files_in(tmp_path) == ["c.pt", "p.png"]  # no metrics file, no temporary file


def test_outputs_started_before_one_that_cannot_start_leave_nothing(cli, tmp_path, monkeypatch):
    import backprop_cli.runs.training as training

    def refuse(*a, **k):
        raise OutputError("tb: cannot write: Permission denied")

    monkeypatch.setattr(training, "TensorBoardSink", refuse)
    r = cli("train", "-c", SEED, "--steps", 2, "--metrics", tmp_path / "m.jsonl", "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 2 and r.stderr.strip() == "error: tb: cannot write: Permission denied"
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("args,name", [
    (["compare-optimizers", "-c", SEED, "--steps", 3, "--plot"], "p.png"),
    (["compare-optimizers", "-c", SEED, "--steps", 3, "--metrics"], "m.csv"),
    (["find-lr", "-c", SEED, "--steps", 5, "--plot"], "p.svg"),
    (["inspect-grads", "-c", SEED, "--out"], "g.npz"),
    (["init"], "new.yaml"),
], ids=["compare --plot", "compare --metrics", "find-lr --plot", "inspect-grads --out", "init"])
def test_every_writer_on_a_full_disk_is_one_line_and_keeps_the_old_file(cli, tmp_path, disk_full, monkeypatch,
                                                                         args, name):
    monkeypatch.chdir(tmp_path)
    old = write(tmp_path / name, "the user's file")
    disk_full(name, room=0)
    r = cli(*args, old, *(["--force"] if args == ["init"] else []))
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == f"error: {old}: cannot write: {ENOSPC}", r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and old.read_text() == "the user's file"
    assert files_in(tmp_path) == [name]


# --------------------------------------------------------------------------- plot: the metrics file is an input

def _plot(cli, tmp_path, metrics):
    return cli("plot", metrics, "--out", tmp_path / "out.png")


def test_plot_reads_only_a_regular_file(cli, tmp_path):
    """Issue 16, item 9: `plot` read its METRICS file whole, whatever it was (a FIFO waited for ever)."""
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    for name, kind in (("fifo.jsonl", "a FIFO (named pipe)"), ("zero.jsonl", "a character device")):
        r = _within(20, lambda: _plot(cli, tmp_path, tmp_path / name))
        assert r.exit_code == 2 and r.stderr.strip() == (
            f"error: {tmp_path / name}: is {kind}, not a regular file; the metrics file must be a regular file")


def test_plot_reads_at_most_its_cap(cli, tmp_path, monkeypatch):
    import backprop_cli.io.metrics_read as outputs

    monkeypatch.setattr(outputs, "MAX_METRICS_BYTES", 1000)
    m = write(tmp_path / "m.jsonl", '{"step": 1, "loss": 0.5}\n' * 100)
    r = _plot(cli, tmp_path, m)
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {m}: metrics file is too large (more than 1,000 bytes)"


GOOD = '{"step": 1, "loss": 0.5, "lr": 0.1}\n'


@pytest.mark.parametrize("line,why", [
    ('{"step": %s, "loss": 0.5}' % ("1" * 5000), "a number too long to read"),
    ('{"step": 2, "loss": %s}' % ("1" * 5000), "a number too long to read"),
    ('{"step": 2, "loss": %s}' % ("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ('{"step": %s, "loss": 0.5}' % ("1" * 400), "no integer 'step' from 0 to"),
    ('{"step": 2, "loss": 0.5, "lr": %s}' % ("1" * 400), "'lr' is a number out of range"),
    ('{"step": 2, "loss": 0.5, "optimizer": "%s"}' % ("x" * 100_000), "'optimizer' is a text of 100,000 characters"),
    ('{"step": 2, "loss": 0.5, "grad_norms": {"w": %s}}' % ("9" * 400), "'grad_norms.w' is a number out of range"),
    ('{"step": 2, "loss": 0.5, "lr": [1, 2]}', "'lr' is not a number, a short text or a mapping of them"),
], ids=["5000-digit step", "5000-digit loss", "deep", "400-digit step", "400-digit lr", "long label",
        "huge grad norm", "a list"])
def test_plot_stops_at_a_record_it_cannot_draw(cli, tmp_path, line, why):
    """Each was a traceback (AttributeError, RecursionError, OverflowError in matplotlib)."""
    m = tmp_path / "m.jsonl"
    m.write_text(GOOD + line + "\n")
    r = _plot(cli, tmp_path, m)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"warning: {m}:2: not ") and why in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 400


@pytest.mark.parametrize("size", ["²x200", "1" * 5000 + "x200", "200x٣٠٠"])
def test_plot_sizes_are_ascii_digits(cli, tmp_path, size):
    m = write(tmp_path / "m.jsonl", GOOD)
    r = cli("plot", m, "--out", tmp_path / "out.png", "--size", size)
    text = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and "expected WIDTHxHEIGHT in pixels" in text and "Traceback" not in text
