"""Writing outputs (io/paths.py, io/atomic.py, io/metrics.py): never half-written, never onto an input,
and an output that fails costs one line and only itself."""


import errno
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import CONFIGS, REGRESSION, ROOT, files_in, one_line, write

from backprop_cli.errors import OutputError

# --------------------------------------------------------------------------- writing: outputs.py
from backprop_cli.io.atomic import AtomicFile, write_atomic
from backprop_cli.io.checkpoint import load_checkpoint
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


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st


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
    r = cli("train", "-c", CONFIGS / "seed.yaml", "--steps", 2, "--tensorboard", "/sys/backprop-tb", "--metrics", m)
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
    r = cli("train", "-c", CONFIGS / "seed.yaml", "--tensorboard", path)
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
    r = cli("train", "-c", CONFIGS / "seed.yaml", "--steps", 3, "-q", "--metrics", m, "--save", ck, "--plot", png)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [f"error: {m}: cannot write: {ENOSPC}"]
    assert load_checkpoint(ck)["step"] == 3 and png.read_bytes().startswith(b"\x89PNG")
    assert files_in(tmp_path) == ["c.pt", "p.png"]  # no metrics file, no temporary file


def test_outputs_started_before_one_that_cannot_start_leave_nothing(cli, tmp_path, monkeypatch):
    import backprop_cli.runs.training as training

    def refuse(*a, **k):
        raise OutputError("tb: cannot write: Permission denied")

    monkeypatch.setattr(training, "TensorBoardSink", refuse)
    r = cli("train", "-c", CONFIGS / "seed.yaml", "--steps", 2, "--metrics", tmp_path / "m.jsonl", "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 2 and r.stderr.strip() == "error: tb: cannot write: Permission denied"
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("args,name", [
    (["compare-optimizers", "-c", CONFIGS / "seed.yaml", "--steps", 3, "--plot"], "p.png"),
    (["compare-optimizers", "-c", CONFIGS / "seed.yaml", "--steps", 3, "--metrics"], "m.csv"),
    (["find-lr", "-c", CONFIGS / "seed.yaml", "--steps", 5, "--plot"], "p.svg"),
    (["inspect-grads", "-c", CONFIGS / "seed.yaml", "--out"], "g.npz"),
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
