"""Chapter 6 of the tutorial holds for seeds 0-2 with this machine's vector kernels and with
ATEN_CPU_CAPABILITY=default (torch's plain C++ kernels: other rounding, as on a CPU without AVX):
the ReLU net ends at an epoch loss of at most 0.1 (the issue's bound: 0.25), the sigmoid net at least
3× higher (the text: above 1), and at lr 0.1 seed 1's ReLU net dies (epoch loss about 2.1)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = r"""
import json, sys
import torch
from typer.testing import CliRunner
from backprop_cli.cli.app import app

runner = CliRunner()
out = {"capability": torch.backends.cpu.get_cpu_capability(), "runs": {}}
for name, extra in (("deep_relu", []), ("deep_sigmoid", []), ("deep_relu_lr0.1", ["--set", "optimizer.lr=0.1"])):
    config = "configs/" + name.split("_lr")[0] + ".yaml"
    for seed in ((0, 1, 2) if not extra else (1,)):
        r = runner.invoke(app, ["train", "-c", config, "--set", f"seed={seed}", "-q", "--format", "json", *extra])
        assert r.exit_code == 0, r.output
        out["runs"][f"{name}/{seed}"] = json.loads(r.stdout)["summary"]["epoch_loss"]
print(json.dumps(out))
"""


@pytest.mark.parametrize("capability", [None, "default"], ids=["this machine's kernels", "ATEN_CPU_CAPABILITY=default"])
def test_chapter_6_holds_for_seeds_0_to_2(capability):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    if capability is not None:
        assert doc["capability"] == capability.upper()
    runs = doc["runs"]
    for seed in (0, 1, 2):
        relu, sigmoid = runs[f"deep_relu/{seed}"], runs[f"deep_sigmoid/{seed}"]
        assert relu <= 0.1, (seed, relu)  # the tutorial: "at most 0.1"; the issue: at most 0.25
        assert sigmoid >= 3 * relu and sigmoid > 1, (seed, sigmoid, relu)  # "stays above 1"
    assert 2.1 / 1.1 <= runs["deep_relu_lr0.1/1"] <= 2.1 * 1.1  # "stays at about 2.1" (within 10%)
