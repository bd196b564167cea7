"""Ctrl-C and SIGTERM on a real process: finish the step, flush, save, exit 130."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import CONFIGS, ROOT

REG = CONFIGS / "regression.yaml"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_flushes_saves_and_exits_130(tmp_path, sig):
    m, ck, png = tmp_path / "m.jsonl", tmp_path / "c.pt", tmp_path / "run.png"
    cmd = [sys.executable, "-m", "backprop_cli", "train", "-c", str(REG), "--steps", "1000000",
           "--log-every", "1", "--metrics", str(m), "--save", str(ck), "--plot", str(png)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.strip().startswith("50 "):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in out and f"interrupted by {signal.Signals(sig).name}" in err
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    steps = [x["step"] for x in recs]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 50
    assert torch.load(ck, weights_only=True)["step"] == steps[-1]
    assert png.read_bytes().startswith(b"\x89PNG") and f"plot:       wrote {png}" in out
    assert "Traceback" not in err
