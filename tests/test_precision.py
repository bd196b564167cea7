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
    assert "loss scale" in r.stdout
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
