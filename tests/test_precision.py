"""precision: bf16 / fp16 (autocast, GradScaler) and compile: true, on the CPU."""

import json

import pytest

from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fp32(cli, tmp_path):
    m = tmp_path / "fp32.jsonl"
    assert cli("train", "-c", REG, "--steps", 20, "--metrics", m, "-q").exit_code == 0
    return records(m)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_tracks_fp32(cli, tmp_path, fp32, precision):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 20, "--set", f"precision={precision}", "--metrics", m, "--log-every", 10)
    assert r.exit_code == 0, r.output
    assert f"precision:  {precision}" in r.stdout
    low = records(m)
    assert [x["loss"] for x in low] != [x["loss"] for x in fp32]  # autocast really ran
    for a, b in zip(low, fp32):
        assert a["loss"] == pytest.approx(b["loss"], rel=3e-2)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=3e-2)  # fp16: unscaled before logging


def test_fp16_shows_the_loss_scale_and_clips_unscaled_gradients(cli, tmp_path):
    m = tmp_path / "m.csv"
    r = cli("train", "-c", REG, "--steps", 10, "--set", "precision=fp16", "--set", "train.clip_grad_norm=0.5",
            "--metrics", m, "--log-every", 5)
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if line.startswith("step "))
    assert header.split()[-3:] == ["lr", "loss_scale", "epoch_loss"]  # the name it has in the metrics
    first = next(line for line in r.stdout.splitlines() if line.split()[:1] == ["1"])
    end = header.index("loss_scale") + len("loss_scale")
    assert first[:end].split()[-1] == "65536"  # GradScaler's initial scale, in its column
    head, *rows = [line.split(",") for line in m.read_text().splitlines()]
    assert "loss_scale" in head and "clipped" in head
    scale = head.index("loss_scale")
    assert all(float(row[scale]) >= 1 for row in rows)
    norm, clipped = head.index("grad_norm"), head.index("clipped")
    assert all((row[clipped] == "True") == (float(row[norm]) > 0.5) for row in rows)
    assert float(rows[0][norm]) < 10  # unscaled (the scale is 65536)


def test_compile(cli, tmp_path, fp32):
    m = tmp_path / "m.jsonl"
    r = cli("train", "-c", REG, "--steps", 20, "--set", "compile=true", "--metrics", m, "-q")
    assert r.exit_code == 0, r.output
    for a, b in zip(records(m), fp32):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_a_compile_failure_is_one_line(tmp_path):
    """torch.compile fails at the first forward when its toolchain is missing: one line, exit 2."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    m = tmp_path / "m.jsonl"
    r = subprocess.run([sys.executable, "-m", "backprop_cli", "train", "-c", str(REG), "--steps", "3", "--set",
                        "compile=true", "--metrics", str(m), "-q"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: compile: torch.compile failed (") and "no-such-g++" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not m.exists()
