"""find-lr: the suggestion rules against a synthetic loss curve, and the command end to end."""

import json
import math

import numpy as np
import pytest

from backprop_cli.runs import lrfind
from conftest import CONFIGS

SEED = CONFIGS / "seed.yaml"
REG = CONFIGS / "regression.yaml"


def synthetic(steps, start=1e-7, end=10.0, centre=-3.0):
    """A loss that falls fastest at lr = 10^centre (a tanh step in log10 lr), then blows up past lr 1."""
    lrs = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    losses = [2.0 - math.tanh(math.log10(lr) - centre) + (math.exp(4 * math.log10(lr)) if lr > 1 else 0.0)
              for lr in lrs]
    return lrs, losses


def fastai_valley(losses):
    """fastai's valley rule as fastai writes it (fastai/callback/schedule.py): the O(n²) double loop."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


@pytest.mark.parametrize("seed", range(5))
def test_the_valley_index_equals_fastais_loop(seed):
    rng = np.random.default_rng(seed)
    values = (np.cumsum(rng.normal(-0.02, 0.1, 300)) + 5).tolist()
    assert lrfind.valley_index(values) == fastai_valley(values)


def test_a_noisy_dip_does_not_move_the_valley_but_moves_the_steepest_point():
    """One batch much lower early in the sweep (a noisy batch): the steepest-descent rule jumps to it,
    the valley stays inside the real descent (lr 1e-3 of the tanh step)."""
    lrs, losses = synthetic(200)
    losses[30] -= 3.0  # lr about 1e-5.8: far before the descent
    got = lrfind.suggest(lrs, losses)
    assert got["steepest_lr"] < 1e-5
    assert 1e-4 < got["suggested_lr"] < 1e-1


def reference(lrs, losses, beta=0.98, skip=None):
    """The rules written with numpy: fastai's debiased EMA, numpy.gradient against log10 lr, Lightning's skip."""
    avg, smoothed = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        smoothed.append(avg / (1 - beta ** (i + 1)))
    smoothed = np.array(smoothed)
    skip = min(10, len(losses) // 10) if skip is None else skip
    slopes = np.gradient(smoothed, np.log10(lrs))
    steepest = skip + int(np.argmin(slopes[skip:]))
    return lrs[steepest], lrs[int(np.argmin(smoothed))] / 10, smoothed


@pytest.mark.parametrize("steps", [100, 400, 2000])
def test_suggestions_equal_the_numpy_reference(steps):
    lrs, losses = synthetic(steps)
    got = lrfind.suggest(lrs, losses)
    steepest, min_over_10, smoothed = reference(lrs, losses)
    assert got["steepest_lr"] == pytest.approx(steepest, rel=1e-12)
    assert got["lr_min"] == pytest.approx(min_over_10, rel=1e-12)
    assert got["suggested_lr"] == pytest.approx(lrs[fastai_valley(smoothed.tolist())], rel=1e-12)
    assert got["smoothed_losses"] == pytest.approx(smoothed.tolist(), rel=1e-12)
    assert got["drop"] == pytest.approx(1 - smoothed.min() / smoothed[0], rel=1e-12)


def test_with_many_points_the_suggestion_finds_the_steepest_descent():
    """With 2000 points the smoothing lags by about 0.2 decades: the suggestion sits just past 1e-3."""
    lrs, losses = synthetic(2000)
    got = lrfind.suggest(lrs, losses)
    assert 1e-3 <= got["steepest_lr"] < 10 ** -2.6
    # and with the smoothing off, exactly at the steepest point of the curve
    steepest, _, _ = reference(lrs, losses, beta=0.0)
    assert steepest == pytest.approx(1e-3, rel=0.01)


def test_no_descent_no_suggestion():
    lrs = [10 ** (-7 + i * 0.1) for i in range(30)]
    got = lrfind.suggest(lrs, [1.0 + i for i in range(30)])
    assert got["suggested_lr"] is None and got["lr_min"] is None and got["falls"] is False
    assert lrfind.suggest([1e-3, 1e-2], [1.0, 0.5])["suggested_lr"] is None  # too few points
    assert lrfind.suggest([], [])["suggested_lr"] is None
    # a fall of 5% is noise: no suggestion, however steep one stretch is
    flat = lrfind.suggest(lrs, [1.0 - 0.05 * (i > 15) for i in range(30)])
    assert flat["suggested_lr"] is None and flat["steepest_lr"] is not None


def test_the_suggestion_is_never_past_the_minimum():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lrs = [10 ** (-6 + 7 * i / 99) for i in range(100)]
        losses = (2 + np.cumsum(rng.normal(0, 0.05, 100)) - np.linspace(0, 1.5, 100)).tolist()
        got = lrfind.suggest(lrs, losses)
        if got["suggested_lr"] is not None:
            best = int(np.argmin(got["smoothed_losses"]))
            assert got["suggested_lr"] <= lrs[best]
            assert got["smoothed_losses"][lrs.index(got["suggested_lr"])] < got["smoothed_losses"][0]


def test_the_gradient_equals_numpy_on_uneven_spacing():
    xs = [0.0, 0.5, 0.7, 1.6, 2.0]
    ys = [1.0, 3.0, 2.0, 5.0, 4.0]
    assert lrfind.gradient(ys, xs) == pytest.approx(np.gradient(ys, xs).tolist(), rel=1e-12)


# --------------------------------------------------------------------------- the command


def test_find_lr_json_end_to_end(cli, seed_cfg, tmp_path):
    before = seed_cfg.read_bytes()
    files = set(tmp_path.iterdir())
    r = cli("find-lr", "-c", seed_cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"suggested_lr", "steepest_lr", "lr_min", "lrs", "losses", "smoothed_losses",
                        "stopped_early"}
    lrs, losses = doc["lrs"], doc["losses"]
    assert len(lrs) == len(losses) <= 100 and doc["stopped_early"] is True
    # the exponential sweep from --start to --end over 100 steps
    assert lrs == pytest.approx([1e-7 * (1e8 ** (i / 99)) for i in range(len(lrs))], rel=1e-9)
    # it stopped at the first step whose smoothed loss passed 4× its minimum
    smoothed = doc["smoothed_losses"]
    assert smoothed[-1] > 4 * min(smoothed) and all(s <= 4 * min(smoothed[:i + 1]) for i, s in enumerate(smoothed[:-1]))
    got = lrfind.suggest(lrs, losses)
    assert doc["suggested_lr"] == got["suggested_lr"] and doc["lr_min"] == got["lr_min"]
    assert 1e-4 < doc["suggested_lr"] < 1
    # train's loop: the first step is train's first step (same weights, same batch)
    t = cli("train", "-c", seed_cfg, "--format", "json")
    assert losses[0] == pytest.approx(json.loads(t.stdout)["summary"]["first_loss"], rel=1e-6)
    # no trace: the config is unchanged and nothing was written
    assert seed_cfg.read_bytes() == before and set(tmp_path.iterdir()) == files


def test_find_lr_table_and_plot(cli, tmp_path):
    png = tmp_path / "lr.png"
    r = cli("find-lr", "-c", REG, "--steps", 60, "--start", 1e-5, "--end", 100, "--plot", png)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "learning-rate range test: " in out and "sgd momentum=0.9" in out
    assert "steepest descent of the smoothed loss" in out and "the smoothed loss's minimum / 10" in out
    assert "valley of the smoothed loss (the suggestion)" in out
    line = next(l for l in out.splitlines() if l.startswith("use it: "))
    assert line.startswith(f"use it: backprop train --config {REG} --set optimizer.lr=")
    lr = float(line.rsplit("=", 1)[1])
    assert 1e-5 < lr < 100
    assert png.read_bytes().startswith(b"\x89PNG") and f"wrote plot: {png}" in r.stderr


def test_a_flat_curve_is_called_out(cli):
    """Six sigmoid layers: the gradients vanish and the loss hardly moves, whatever the lr."""
    r = cli("find-lr", "-c", CONFIGS / "deep_sigmoid.yaml", "--steps", 40)
    assert r.exit_code == 0, r.output
    assert "no suggestion: the smoothed loss never fell 10% below its start" in r.stdout
    assert "use it:" not in r.stdout
    j = cli("find-lr", "-c", CONFIGS / "deep_sigmoid.yaml", "--steps", 40, "--format", "json")
    assert json.loads(j.stdout)["suggested_lr"] is None
    r = cli("find-lr", "-c", REG)
    assert r.exit_code == 0 and "no clear descent" not in r.stdout


def test_a_run_that_goes_non_finite_stops_early(cli, tmp_path):
    r = cli("find-lr", "-c", REG, "--start", 1, "--end", 1e6, "--steps", 30, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["stopped_early"] is True and len(doc["lrs"]) < 30
    assert all(math.isfinite(v) for v in doc["losses"])


def test_the_sweep_replaces_the_config_schedule(cli, tmp_path):
    r = cli("find-lr", "-c", REG, "--set", "scheduler={name: warmup_cosine, warmup_steps: 50}",
            "--start", 1e-4, "--end", 1e-2, "--steps", 5, "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lrs"] == pytest.approx([1e-4 * 10 ** (2 * i / 4) for i in range(5)], rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--start", "1", "--end", "0.1"], "error: --start must be below --end (got --start 1, --end 0.1)"),
    (["--start", "0.1", "--end", "0.1"], "error: --start must be below --end (got --start 0.1, --end 0.1)"),
    (["--start", "0"], "error: --start: must be a number greater than 0 (got 0)"),
    (["--end", "nan"], "error: --end: must be a number greater than 0 (got nan)"),
    (["--steps", "2"], "error: --steps: the sweep needs at least 3 steps (got 2)"),
    (["--plot", "x.pdf"], "plot file must end in .png or .svg"),
    (["--start", "0.1", "--end", "0.1000000000000001"], "error: --start and --end are too close for 100 steps: "
     "consecutive learning rates would be the same number (got --start 0.1, --end 0.1000000000000001); widen the "
     "range or give fewer --steps\n"),
    (["--start", "5e-324", "--end", "1e-323", "--steps", "3"], "(got --start 5e-324, --end 1e-323); widen the range\n"),
    (["--start", "1", "--end", "1.0000000000000002", "--steps", "3"], "widen the range\n"),
])
def test_bad_sweeps_are_one_line_exit_2(cli, tmp_path, args, message):
    r = cli("find-lr", "-c", SEED, *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_sweeps_do_not_import_torch(tmp_path):
    from test_imports import run

    r = run(["find-lr", "-c", SEED, "--start", "1", "--end", "0.1"], tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_positive = st.floats(min_value=5e-324, max_value=1e308, allow_nan=False) | st.sampled_from(
    [5e-324, 1e-323, 0.1, 0.1000000000000001, 1.0, 1.0000000000000002])


@settings(max_examples=300, deadline=None)
@given(start=_positive, end=_positive, steps=st.integers(3, 200))
def test_any_accepted_sweep_has_distinct_points_and_suggests_without_dividing_by_zero(start, end, steps):
    """The range check is exactly what the slopes need: an accepted sweep's learning rates (and their
    log10) strictly increase; a refused one has two equal. Whatever the losses, the suggestion is a number
    or None, never an exception."""
    if start >= end:
        return
    lrs = [lrfind.lr_at(i, steps, start, end) for i in range(steps)]
    logs = [math.log10(lr) for lr in lrs]
    assert lrfind.too_close(start, end, steps) == any(b <= a for a, b in zip(logs, logs[1:]))
    losses = [1.0 / (1 + i) if i < steps // 2 else float(i) for i in range(steps)]
    got = lrfind.suggest(lrs, losses)  # even for a refused range (the engine's lr may round the same way)
    assert got["suggested_lr"] is None or got["suggested_lr"] in lrs


@given(lrs=st.lists(st.sampled_from([1e-3, 1e-2, 1e-2, 0.1]), min_size=3, max_size=30).map(sorted),
       losses=st.lists(st.floats(0, 10), min_size=30, max_size=30))
def test_suggest_with_repeated_learning_rates_is_defined(lrs, losses):
    got = lrfind.suggest(lrs, losses[: len(lrs)])
    assert got["suggested_lr"] is None or got["suggested_lr"] in lrs
