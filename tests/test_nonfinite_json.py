"""Non-finite numbers in results: JSON writes null, explain reports divergence as a result."""



# --------------------------------------------------------------------------- non-finite numbers: JSON and explain
import json  # noqa: E402
import math

import pytest
from conftest import CONFIGS


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
    r = cli("check-grads", "-c", CONFIGS / "seed.yaml", "--set", "data.targets=teacher", "--set", "data.noise=1e30", "--format", "json")
    assert r.exit_code == 1, r.output  # an overflowing loss cannot pass the check
    doc = strict_json(r.stdout)
    assert doc["loss"] is None and doc["pass"] is False
    assert any(p.startswith("the loss is inf in float32") for p in doc["problems"]), doc["problems"]


@pytest.mark.parametrize("clip", ["inf", "nan", "-inf", "0", "-1"])
def test_inspect_grads_clip_takes_a_finite_positive_number_as_the_config_does(cli, clip):
    r = cli("inspect-grads", "-c", CONFIGS / "seed.yaml", "--clip", clip, "--format", "json")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: --clip: must be a finite number greater than 0 (got {float(clip):g})"
