"""compare-optimizers: fairness, agreement with `train`, Adam's first step, outputs."""

import json
import math
import struct

import pytest
import torch


from backprop_cli.core.build import build_run
from backprop_cli.runs.compare import compare_optimizers, default_optimizers, summarize, variant
from backprop_cli.core.engine import NonFiniteError, run_steps
from backprop_cli.render.console import fmt
from backprop_cli.config import load_config, parse_optimizer
from backprop_cli.errors import ConfigError
from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"


def cfg(*sets):
    return load_config(REG, ["device=cpu", *sets])


def test_runs_share_initial_weights_batches_and_kernel():
    c = cfg()
    results = compare_optimizers(c, [parse_optimizer("sgd:lr=0.1"), parse_optimizer("adam:lr=1e-3"),
                                      parse_optimizer("rmsprop")], steps=5)
    first = results[0]
    for r in results[1:]:
        assert r.initial_state.keys() == first.initial_state.keys()
        assert all(torch.equal(r.initial_state[k], first.initial_state[k]) for k in first.initial_state)
        assert r.records[0].loss == first.records[0].loss  # same init, same first batch
        assert r.kernel == first.kernel
    assert results[1].records[1].loss != first.records[1].loss  # then they part ways


def test_sgd_run_equals_train_with_the_same_config():
    c = cfg("train.steps=60")
    results = compare_optimizers(c, [c.optimizer, parse_optimizer("adam")])
    run = build_run(c)
    losses = [r.loss for r in run_steps(run.loop(), run.steps, guard=run.guard)]
    assert results[0].losses == losses


def test_every_run_gets_the_fused_kernel_only_when_every_optimizer_has_one():
    c = cfg("train.steps=30")
    both = compare_optimizers(c, [c.optimizer, parse_optimizer("adam")])
    assert [r.kernel for r in both] == [{"fused": True}] * 2
    mixed = compare_optimizers(c, [c.optimizer, parse_optimizer("rmsprop")])
    assert [r.kernel for r in mixed] == [{"foreach": False}] * 2
    assert [r.implementation for r in both + mixed] == ["fused"] * 2 + ["for-loop"] * 2
    # the kernel changes only the rounding: the SGD runs agree to float32 precision
    assert torch.allclose(torch.tensor(mixed[0].losses), torch.tensor(both[0].losses), rtol=1e-5, atol=1e-7)


def test_adams_first_update_is_lr_times_sign_of_the_gradient():
    lr, eps = 1e-3, 1e-8
    c = cfg()
    spec = parse_optimizer(f"adam:lr={lr}")
    (result,) = compare_optimizers(c, [spec], steps=1)
    # compare's run, rebuilt from its recipe (the config with this optimizer), trained the same step
    again = build_run(variant(c, spec, c.seed, 1))
    assert [r.loss for r in run_steps(again.loop(), 1, guard=again.guard)] == result.losses
    final = {k: v.detach().clone() for k, v in again.model.state_dict().items()}
    # the gradient at the initial weights, from a plain forward/backward written here
    model = build_run(c).model
    model.load_state_dict(result.initial_state)
    x, y = build_run(c).batches(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    for name, p in model.named_parameters():
        g = p.grad
        delta = final[name].double() - result.initial_state[name].double()
        # Adam's first step is lr·g/(|g| + eps) = lr·sign(g) up to lr·eps/|g|. float32 adds a few
        # roundings of the update (Adam's own arithmetic) and one of the stored weight.
        f32 = torch.finfo(torch.float32).eps
        w = torch.maximum(result.initial_state[name].abs(), final[name].abs())
        allowed = lr * eps / g.abs().clamp_min(1e-30) + 2 * f32 * w + 10 * f32 * lr
        assert ((delta + lr * torch.sign(g).double()).abs() <= allowed).all(), name


def test_update_ratio_is_measured_against_the_weights():
    c = cfg()
    spec = parse_optimizer("sgd:lr=0.1")
    (r,) = compare_optimizers(c, [spec], steps=1)
    again = build_run(variant(c, spec, c.seed, 1))
    list(run_steps(again.loop(), 1, guard=again.guard))
    final = again.model.state_dict()
    num = torch.sqrt(sum(((final[k] - r.initial_state[k]) ** 2).sum() for k in final))
    den = torch.sqrt(sum((r.initial_state[k] ** 2).sum() for k in r.initial_state))
    assert r.records[0].update_ratio == pytest.approx((num / den).item(), rel=1e-5)


def test_seeds_change_init_and_order_but_not_across_optimizers():
    c = cfg()
    results = compare_optimizers(c, default_optimizers(c), steps=3, seeds=2)
    assert [(r.optimizer, r.seed) for r in results] == [("sgd", 0), ("adam", 0), ("sgd", 1), ("adam", 1)]
    assert results[0].records[0].loss == results[1].records[0].loss
    assert results[2].records[0].loss == results[3].records[0].loss
    assert results[0].records[0].loss != results[2].records[0].loss
    summary = summarize(results)
    losses = [results[0].losses[-1], results[2].losses[-1]]
    assert summary[0]["final_loss"]["mean"] == pytest.approx(sum(losses) / 2)
    assert summary[0]["final_loss"]["std"] == pytest.approx(abs(losses[0] - losses[1]) / 2)


def test_defaults_and_config_section():
    c = cfg()
    assert [(s.name, s.lr) for s in default_optimizers(c)] == [("sgd", 0.1), ("adam", 1e-3)]
    c = load_config(CONFIGS / "classification.yaml")  # adam in the config: SGD falls back to lr 0.01
    assert [(s.name, s.lr) for s in default_optimizers(c)] == [("sgd", 0.01), ("adam", 1e-3)]
    c = load_config(CONFIGS / "compare.yaml")
    assert [s.name for s in default_optimizers(c)] == ["sgd", "sgd", "adam"]


def test_optimizer_specs_are_validated_like_the_config():
    assert parse_optimizer("sgd:lr=0.1,momentum=0.9").momentum == 0.9
    assert parse_optimizer("adam:betas=[0.8,0.9]").betas == [0.8, 0.9]
    with pytest.raises(ConfigError) as e:
        parse_optimizer("sgd:betas=[0.9,0.99]")
    assert "optimizer.betas: unknown key; allowed keys: name, lr, momentum" in e.value.problems[0]
    with pytest.raises(ConfigError, match="optimizer.lr: must be greater than 0"):
        parse_optimizer("adam:lr=0")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        parse_optimizer("lion")


def test_json_document_schema(cli):
    r = cli("compare-optimizers", "-c", REG, "--steps", 20, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"ranked_by", "runs", "summary"} and doc["ranked_by"] == "final_loss"  # no validation data
    assert [run["optimizer"] for run in doc["runs"]] == ["sgd", "adam"]
    finals = [run["final_loss"] for run in doc["runs"]]
    assert [e["rank"] for e in doc["summary"]] == [1 + sorted(finals).index(f) for f in finals]
    keys = {"optimizer", "label", "hyperparams", "implementation", "seed", "status", "diverged_at", "losses",
            "grad_norms", "final_loss", "best_loss", "steps_to_10pct", "mean_update_ratio", "time_s"}
    for run in doc["runs"]:
        assert set(run) == keys
        assert len(run["losses"]) == len(run["grad_norms"]) == 20
        assert run["final_loss"] == run["losses"][-1] and run["best_loss"] == min(run["losses"])
    assert doc["runs"][0]["label"] == "sgd lr=0.1 momentum=0.9" and doc["runs"][1]["label"] == "adam lr=0.001"
    assert doc["runs"][0]["hyperparams"]["momentum"] == 0.9
    assert [run["implementation"] for run in doc["runs"]] == ["fused", "fused"]
    s = doc["summary"][0]
    assert s["implementation"] == "fused"
    assert {"label", "optimizer", "hyperparams", "implementation", "seeds", "final_loss", "best_loss", "steps_to_10pct",
            "mean_grad_norm", "mean_update_ratio", "time_s", "steps_per_s", "best_in"} <= set(s)


def test_table_output_and_metrics(cli, tmp_path):
    m = tmp_path / "m.jsonl"
    r = cli("compare-optimizers", "-c", REG, "--steps", 30, "-o", "sgd:lr=0.1", "-o", "adam:lr=1e-2",
            "--metrics", m)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "sgd lr=0.1" in out and "adam lr=0.01" in out and "steps_to_10pct" in out
    assert "loss curves (log scale" in out and "▁" in out and "* best in its column" in out
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    assert len(recs) == 60 and {r["optimizer"] for r in recs} == {"sgd lr=0.1", "adam lr=0.01"}
    assert {"step", "loss", "grad_norm", "grad_norms", "lr", "time", "optimizer", "seed", "update_ratio"} == set(recs[0])


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_is_a_valid_image_of_the_asked_size(cli, tmp_path):
    png = tmp_path / "c.png"
    r = cli("compare-optimizers", "-c", REG, "--steps", 10, "--seeds", 2, "--plot", png, "--plot-size", "800x400")
    assert r.exit_code == 0, r.output
    assert _png_size(png) == (800, 400)
    svg = tmp_path / "c.svg"
    assert cli("compare-optimizers", "-c", REG, "--steps", 5, "--plot", svg).exit_code == 0
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


@pytest.mark.parametrize("args,fragment", [
    (["-o", "adam:lr=0"], "--optimizer adam:lr=0: optimizer.lr: must be greater than 0 (got 0)"),
    (["--plot", "x.jpg"], "plot file must end in .png or .svg"),
    (["--metrics", "x.txt"], "metrics file must end in .jsonl or .csv"),
])
def test_bad_options_are_one_line_exit_2(cli, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    r = cli("compare-optimizers", "-c", REG, "--steps", 2, *args)
    assert r.exit_code == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_plot_size(cli):
    r = cli("compare-optimizers", "-c", REG, "--plot-size", "big")
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in r.output


# --------------------------------------------------------------------------- a diverging optimizer

DIVERGING = ["-c", REG, "--steps", 60, "-o", "sgd:lr=5", "-o", "adam:lr=0.01"]


def test_a_diverging_optimizer_is_marked_and_the_others_go_on(cli, tmp_path):
    m, png = tmp_path / "m.jsonl", tmp_path / "p.png"
    r = cli("compare-optimizers", *DIVERGING, "--metrics", m, "--plot", png)
    assert r.exit_code == 0, r.output
    # the same run, by hand: SGD lr=5 on this config goes non-finite at some step N
    from backprop_cli.core.engine import NonFiniteError

    c = cfg("train.steps=60", "optimizer=sgd", "optimizer.lr=5")
    run = build_run(c)
    seen = []
    with pytest.raises(NonFiniteError) as e:
        for rec in run_steps(run.loop(), run.steps, guard=run.guard):
            seen.append(rec)
    n = e.value.step
    assert 1 < n < 60
    out = " ".join(r.stdout.split())
    assert f"diverged at step {n}" in out and "done" in out
    assert f"sgd lr=5 diverged at step {n} (loss" in out
    assert f"its numbers stop at its last finite loss, {fmt(seen[-1].loss)}" in out
    assert 'lower its lr (-o "sgd:lr=0.5") or clip the gradients (--set train.clip_grad_norm=1)' in out
    recs = [json.loads(line) for line in m.read_text().splitlines()]
    sgd = [x for x in recs if x["optimizer"] == "sgd lr=5"]
    assert [x["step"] for x in sgd] == list(range(1, n + 1))
    assert [x["loss"] for x in sgd[:-1]] == [x.loss for x in seen]
    assert sgd[-1]["diverged"] is True and all("diverged" not in x for x in sgd[:-1])
    assert sgd[-1]["loss"] is None or not math.isfinite(e.value.record.loss) or sgd[-1]["loss"] == e.value.record.loss
    assert len([x for x in recs if x["optimizer"] == "adam lr=0.01"]) == 60
    assert png.exists()
    r = cli("compare-optimizers", *DIVERGING, "--format", "json")
    doc = json.loads(r.stdout)
    sgd_run, adam_run = doc["runs"]
    assert (sgd_run["status"], sgd_run["diverged_at"], len(sgd_run["losses"])) == ("diverged", n, n - 1)
    assert sgd_run["final_loss"] == seen[-1].loss
    assert (adam_run["status"], adam_run["diverged_at"], len(adam_run["losses"])) == ("done", None, 60)
    entry = doc["summary"][0]
    assert entry["diverged"] == [{"seed": 0, "step": n, "cause": e.value.cause, "last_finite_loss": seen[-1].loss}]
    assert entry["best_in"] == [] and "hint" in entry and "hint" not in doc["summary"][1]


def test_the_diverged_record_in_csv_metrics(cli, tmp_path):
    m = tmp_path / "m.csv"
    assert cli("compare-optimizers", *DIVERGING, "--metrics", m, "-q").exit_code == 0
    head, *rows = m.read_text().splitlines()
    cols = head.split(",")
    assert "diverged" in cols
    marked = [row.split(",") for row in rows if row.split(",")[cols.index("diverged")] == "True"]
    assert len(marked) == 1 and marked[0][cols.index("optimizer")] == "sgd lr=5"


def test_every_run_diverging_exits_3_after_the_table(cli, tmp_path):
    r = cli("compare-optimizers", "-c", REG, "--steps", 60, "-o", "sgd:lr=5", "-o", "sgd:lr=8",
            "--plot", tmp_path / "p.png")
    assert r.exit_code == 3, r.output
    assert "diverged at step" in r.stdout and (tmp_path / "p.png").exists()
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "every run diverged: sgd lr=5 at step" in err[0] and "sgd lr=8 at step" in err[0]


def test_the_plot_marks_where_a_run_diverged(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from backprop_cli.runs.compare import curves
    from backprop_cli.render.plots import compare_figure

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    c = cfg()
    results = compare_optimizers(c, [parse_optimizer("sgd:lr=5"), parse_optimizer("adam:lr=0.01")], steps=40)
    series = curves(results)
    compare_figure(tmp_path / "p.png", series)
    ax_loss, ax_grad = figures[0].axes
    sgd = results[0]
    last = sgd.records[-1]
    marks = [line for line in ax_loss.lines if line.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [last.step] and list(marks[0].get_ydata()) == [last.loss]
    marks = [line for line in ax_grad.lines if line.get_marker() == "x"]
    assert list(marks[0].get_ydata()) == [last.grad_norm]
    labels = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert labels == [f"sgd lr=5 (diverged at step {sgd.diverged_at})", "adam lr=0.01"]


def test_seed_bands_stay_within_the_curves_on_the_log_axis(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from backprop_cli.render.plots import compare_figure

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    steps = list(range(1, 11))
    mean = [1.0 / s for s in steps]
    series = [{"label": "a", "steps": steps, "loss_mean": mean, "loss_std": [3 * m for m in mean],
               "grad_mean": mean, "grad_std": [0.0] * 10, "ends": []},
              {"label": "b", "steps": steps, "loss_mean": [2 * m for m in mean], "loss_std": [0.0] * 10,
               "grad_mean": mean, "grad_std": [0.0] * 10, "ends": []}]
    compare_figure(tmp_path / "p.png", series, title="x: mean ± std over 3 seeds")
    ax_loss = figures[0].axes[0]
    band = ax_loss.collections[0]  # series a: std 3× its mean
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() >= min(mean) - 1e-12 and ys.max() <= 2 * max(mean) + 1e-12  # the band: within the curves
    assert ax_loss.get_ylim()[0] > 1e-3  # before: the band reached 1e-12 and flattened the plot


def test_a_multi_seed_plot_is_not_titled_same_init(cli, monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert cli("compare-optimizers", "-c", REG, "--steps", 5, "--seeds", 2, "--plot", tmp_path / "p.png").exit_code == 0
    assert cli("compare-optimizers", "-c", REG, "--steps", 5, "--plot", tmp_path / "q.png").exit_code == 0
    several, one = (f._suptitle.get_text() for f in figures)
    assert "same init" not in several and "mean ± std over 2 seeds" in several
    assert one == "regression.yaml: same initial weights and batches"


def test_progress_bars_know_their_length_before_their_run_starts():
    calls = []
    c = cfg()
    compare_optimizers(c, [parse_optimizer("sgd"), parse_optimizer("adam")], steps=4, seeds=2,
                       progress=lambda label, done, total: calls.append((label, done, total)))
    assert calls[:2] == [("sgd lr=0.001", 0, 8), ("adam lr=0.001", 0, 8)]  # torch's default lr for both
    assert all(total == 8 for _, _, total in calls)
    assert calls[-1] == ("adam lr=0.001", 8, 8)
    from backprop_cli.runs.compare import run_length
    from backprop_cli.data.load import read_table

    for sets in (["train.steps=30"], ["train.steps=null", "train.epochs=3"], ["train.steps=null", "train.epochs=2", "data.batch_size=100"]):
        c = cfg(*sets)
        (r,) = compare_optimizers(c, [parse_optimizer("sgd")], seeds=1)
        assert run_length(c, read_table(c)) == r.steps == len(r.records)


# --------------------------------------------------------------------------- compare equals train


ALL_OPTIONS = """\
seed: 3
device: cpu
model: {input_size: 8, hidden_sizes: [16, 12], output_size: 2, activation: gelu}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
scheduler: {name: step, step_size: 7, gamma: 0.5}
precision: bf16
data: {kind: synthetic, samples: 256, batch_size: 32}
train: {steps: 40, clip_grad_norm: 0.5, on_nonfinite: skip, max_skips: 3, zero_grad: false}
"""


def _train_records(c):
    """train's own path (run_training), its records as the reporter gets them."""
    from backprop_cli.runs.training import TrainOptions, run_training

    class Collect:
        def __init__(self):
            self.records = []

        def start(self, info, log_every):
            pass

        def step(self, rec):
            self.records.append(rec)

        def warn(self, text):
            pass

        def finish(self, *args):
            pass

    collect = Collect()
    try:
        run_training(c, TrainOptions(), collect)
    except NonFiniteError:
        pass
    return collect.records


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")) + ["all options", "diverging"])
def test_compares_run_of_the_configs_own_optimizer_equals_train(name, tmp_path):
    if name == "all options":
        path = tmp_path / "all.yaml"
        path.write_text(ALL_OPTIONS)
        c = load_config(path)
    elif name == "diverging":
        c = load_config(REG, ["device=cpu", "optimizer.lr=5", "train.steps=60"])
    else:
        c = load_config(CONFIGS / f"{name}.yaml", ["device=cpu", "train.steps=60", "train.epochs=null"])
    own = c.optimizer
    specs = [own] + [s for s in default_optimizers(c) if s != own]
    results = compare_optimizers(c, specs)
    records = _train_records(c)
    assert records
    mine = results[0]
    assert [r.loss for r in mine.records] == [r.loss for r in records]  # bitwise
    assert [r.grad_norm for r in mine.records] == [r.grad_norm for r in records]
    assert [r.lr for r in mine.records] == [r.lr for r in records]
    assert [r.clipped for r in mine.records] == [r.clipped for r in records]
    if name == "diverging":
        assert mine.status == "diverged" and mine.diverged_at == len(records) + 1
    else:
        assert mine.status == "done" and len(records) == mine.steps
    if name == "all options":
        assert any(r.clipped for r in records) and len({r.lr for r in records}) > 1


def test_timing_columns_name_a_winner_only_beyond_the_runs_spread(monkeypatch):
    """Wall time and steps/s differ by noise: with one seed (no spread to measure) neither has a best;
    with several, only a gap wider than both runs' mean ± std does. The losses still name theirs."""
    from backprop_cli.runs import compare as cmp

    c = cfg()
    one = summarize(compare_optimizers(c, default_optimizers(c), steps=3, seeds=1))
    assert any("final_loss" in e["best_in"] for e in one)
    assert not any(k in e["best_in"] for e in one for k in ("time_s", "steps_per_s"))
    results = compare_optimizers(c, default_optimizers(c), steps=3, seeds=2)
    times = {("sgd", 0): 1.0, ("sgd", 1): 1.2, ("adam", 0): 1.1, ("adam", 1): 1.3}  # overlap: 1.1±.1 vs 1.2±.1
    original = cmp.RunResult.metrics

    def timed(self):
        m = original(self)
        m["time_s"] = times[(self.optimizer, self.seed)]
        m["steps_per_s"] = 3 / m["time_s"]
        return m

    monkeypatch.setattr(cmp.RunResult, "metrics", timed)
    assert not any("time_s" in e["best_in"] for e in summarize(results))
    times.update({("adam", 0): 3.0, ("adam", 1): 3.2})  # 1.1 ± 0.1 against 3.1 ± 0.1: beyond the spread
    best = {e["label"].split()[0]: e["best_in"] for e in summarize(results)}
    assert "time_s" in best["sgd"] and "steps_per_s" in best["sgd"] and "time_s" not in best["adam"]
