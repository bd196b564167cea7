"""Reading the files a user names (io/files.py): regular files only, capped, one line for anything else."""


import os
import socket

import pytest
from conftest import error_of, one_line, within, write

from backprop_cli.errors import CheckpointError, ConfigError, DataError
from backprop_cli.io.files import open_regular, read_text_capped

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
    assert within(5, lambda: error_of(lambda: open_regular(fifo, "config file"))) == \
        f"{fifo}: is a FIFO (named pipe), not a regular file; the config file must be a regular file"


def test_a_fifo_swapped_in_after_the_check_is_caught_on_what_was_opened(tmp_path, monkeypatch):
    """The race: stat sees a regular file, then a FIFO takes its place before open. O_NONBLOCK keeps
    the open from waiting, fstat refuses what was opened."""
    fifo, p = tmp_path / "fifo", write(tmp_path / "c.yaml", "seed: 1\n")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: real_stat(p if path == fifo else path, *a, **kw))
    assert "is a FIFO" in within(5, lambda: error_of(lambda: open_regular(fifo)))






def test_a_socket_and_a_directory_are_refused(tmp_path):
    sock_path = tmp_path / "s"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        assert error_of(lambda: open_regular(sock_path, "config file")).startswith(f"{sock_path}: is a socket")
    finally:
        s.close()
    assert error_of(lambda: open_regular(tmp_path, "config file")) == f"{tmp_path}: is a directory, not a config file"


def test_symlinks_are_followed_and_broken_ones_named_by_the_path_given(tmp_path):
    write(tmp_path / "real.csv", "a,y\n1,2\n")
    (tmp_path / "good.csv").symlink_to("real.csv")
    assert read_text_capped(tmp_path / "good.csv", 100) == "a,y\n1,2\n"
    (tmp_path / "dangling.csv").symlink_to("gone.csv")
    assert error_of(lambda: open_regular(tmp_path / "dangling.csv", "CSV file", DataError)) == \
        f"{tmp_path / 'dangling.csv'}: is a symlink to 'gone.csv', which does not exist"
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    assert error_of(lambda: open_regular(tmp_path / "loop.csv")) == \
        f"{tmp_path / 'loop.csv'}: symlink loop (too many levels of symbolic links)"
    assert error_of(lambda: open_regular(tmp_path / "none.pt", "checkpoint file", CheckpointError)) == \
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
    assert error_of(lambda: read_text_capped(p, 100)) == f"{p}: permission denied"
