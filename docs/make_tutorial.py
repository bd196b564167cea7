"""Regenerate docs/tutorial.md: python docs/make_tutorial.py

Every command below runs for real (in a scratch copy of configs/, as if from the repository root) and
its output is pasted under it, so the tutorial shows exactly what the tool prints. A command that is
meant to fail is followed by its exit code. tests/test_docs.py runs every command again.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ---- section 6b and chapter 8 (issue 25: the cures): kept in blocks of their own, inserted into PARTS below.
# Every claim their prose makes is asserted by tests/test_tutorial_cures.py.

SECTION_6B: list[tuple[str, str]] = [
    ("md", """\
## 6b. The cures: batch normalization and skip connections

ReLU with Kaiming init is one cure; two more change the network instead of its activation, and keep
the sigmoids. Both are config keys ([normalization, dropout and residual
connections](commands.md#normalization-dropout-and-residual-connections)).

**Batch normalization** (`model.norm: batch`) puts a `normK` layer after each hidden linear layer,
before the activation: each unit is standardized over the rows of the batch, then scaled and shifted
by two learned vectors (`normK.weight` γ and `normK.bias` β; the linear layers lose their bias, which
β replaces). Every sigmoid then works near 0, where its slope is largest, and the scale of the weights
no longer shrinks the signal: the same six-layer sigmoid net, the same lr, now passes gradients of the
same order to every layer (`layer1`'s is within 10× of the last layer's at step 1, where it was 60,000×
smaller), no warning is printed, and the epoch loss falls below 0.2 where the plain net stayed above 1:
"""),
    ("cmd", "backprop train --config configs/deep_sigmoid.yaml --set model.norm=batch --metrics docs/deep_sigmoid_bn.jsonl"),
    ("md", """\
The dashboard shows the norm layers' gradients as dashed lines in the colour of their linear layer; the
bands of the plain net (the picture above) have closed up:
"""),
    ("cmd", "backprop plot docs/deep_sigmoid_bn.jsonl --out docs/deep_sigmoid_bn.png"),
    ("md", """\
![the dashboard of the six-layer sigmoid net with batch norm: every layer's gradient norm of the same order](deep_sigmoid_bn.png)

In training, batch norm uses the batch's own mean and variance, and keeps running averages of them;
`evaluate`, `predict` and the evaluations during `train` use those running averages (eval mode), so a
prediction does not depend on the other rows. `check-grads` holds the hand-written backward of batch
norm, through the batch mean and variance, against autograd and finite differences:
"""),
    ("cmd", "backprop check-grads --config configs/deep_sigmoid.yaml --set model.norm=batch"),
    ("md", """\
**Skip connections** (`model.residual: true`) add each hidden block's input to its output where the
two widths match (here `layer2` to `layer6`: `layer1` goes from 8 to 32), h_k = h_{k−1} + f(W_k·h_{k−1}).
The gradient reaching h_{k−1} is the block's plus the skip's, which passes it on unchanged, so it
reaches `layer1` without being multiplied down six times: `layer1`'s gradient norm at step 1 is above
0.01 (it was 1e-5 without skips). The sums grow layer by layer, so the learning rate is lowered to
0.01; the epoch loss ends below 0.2:
"""),
    ("cmd", "backprop train --config configs/deep_sigmoid.yaml --set model.residual=true --set optimizer.lr=0.01"),
]

CHAPTER_OVERFITTING: list[tuple[str, str]] = [
    ("md", """\
## 8. Over-fitting and its cures

A network with more weights than it has training rows can learn the rows by heart, noise and all.
`configs/overfit.yaml` gives two hidden layers of 128 ReLUs (17,793 weights) 40 training rows of noisy
teacher data and holds out the other 160; every 20 steps it measures the loss on both (in eval mode).
The training loss falls to almost 0 (below 0.01), while the validation loss, below 0.6 at its best
(in the first 40 steps), rises above 0.6: the two columns drift apart:
"""),
    ("cmd", "backprop train --config configs/overfit.yaml"),
    ("md", """\
**Dropout** (`model.dropout: 0.5`) zeroes each hidden unit's output with probability 0.5 at every
training step (and scales the others by 2, so the expected sum is unchanged); no unit can rely on a
particular other one. Evaluation switches it off. The training loss no longer reaches 0 and the final
validation loss is at least 0.1 lower:
"""),
    ("cmd", "backprop train --config configs/overfit.yaml --set model.dropout=0.5"),
    ("md", """\
**Weight decay** (`optimizer.weight_decay`) pulls every weight towards 0 at each step; the final
validation loss is lower than the plain run's by more than 0.05:
"""),
    ("cmd", "backprop train --config configs/overfit.yaml --set optimizer.weight_decay=0.01"),
    ("md", """\
**Early stopping** ends the run once the validation loss has not improved for `patience` evaluations,
and `--save-best` keeps the checkpoint of the best one. Here it stops long before step 600 (by step
200), and the checkpoint it keeps has a validation loss below 0.6, which `evaluate` measures again:
"""),
    ("cmd", "backprop train --config configs/overfit.yaml --set train.early_stopping='{patience: 5}' "
            "--save-best overfit_best.pt"),
    ("cmd", "backprop evaluate --checkpoint overfit_best.pt"),
    ("md", """\
Each cure narrows the gap between the two columns in its own way; they combine (try dropout with early
stopping), and more training rows (`--set data.validation=0.5`) help most of all.
"""),
]

PARTS: list[tuple[str, str]] = [
    ("md", """\
# Tutorial: backpropagation, replayed with `backprop`

This walks through the classic backpropagation example with the tool: first the chain rule on a
network of two scalar weights, then a real 10→20→1 network one step at a time, then what goes wrong
without `zero_grad`, with too large a learning rate and with clipping, then SGD against Adam, your
own CSV data, deep networks whose gradients vanish or explode, and finally backpropagation by hand:
the chain rule of a real network layer by layer, the graph autograd builds, and a backward of your
own, checked. Run the commands from the repository root after the set-up in the
[README](../README.md); every output below was pasted from a real run (`python docs/make_tutorial.py`
regenerates this page), and a test runs every command in it again and checks every claim the text
makes about the outputs (where it says "about", within the tolerance written beside that check in
`docs/make_tutorial.py`).

## 1. The chain rule on two weights

One input x, one hidden neuron and one output neuron, no bias, identity activation:
z1 = w1·x, ŷ = z2 = w2·z1, and the loss L = ½(y − ŷ)². Backpropagation is the chain rule applied from
the loss backwards:

* ∂L/∂ŷ = −(y − ŷ)
* ∂L/∂w2 = ∂L/∂ŷ · ∂ŷ/∂w2 = −(y − ŷ)·z1
* ∂L/∂w1 = ∂L/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1 = −(y − ŷ)·w2·x

`backprop explain` works these out with numbers, puts PyTorch autograd's answer beside them, and takes
one SGD step w ← w − η·∂L/∂w:
"""),
    ("cmd", "backprop explain"),
    ("md", """\
The hand-written gradients and autograd's agree to the last digit, and the loss falls after the
update. Repeat the update a few times and watch it keep falling:
"""),
    ("cmd", "backprop explain --updates 5"),
    ("md", """\
## 2. A real network, one step

`configs/seed.yaml` is the classic PyTorch example: a 10→20→1 network (`layer1` → ReLU → `layer2`),
MSE loss, SGD with lr 0.01, five random samples, one step of forward, loss, `zero_grad`, `backward`,
`step`. The row shows the loss and the L2 norm of every parameter's gradient, measured after
`backward()` and before `optimizer.step()`:
"""),
    ("cmd", "backprop train --config configs/seed.yaml"),
    ("md", """\
`inspect-grads` stops on the same batch just before `optimizer.step()` and shows each `.grad`: its
statistics, the values themselves, and warnings. Here a quarter of the hidden ReLUs output zero for
all five samples, so their rows of `layer1.weight.grad` are exactly zero:
"""),
    ("cmd", "backprop inspect-grads --config configs/seed.yaml"),
    ("md", """\
Are these gradients right? `check-grads` recomputes them twice without autograd: once by the chain
rule written out layer by layer (δ2 = ∂L/∂ŷ, dW2 = δ2ᵀ·h, δ1 = (δ2·W2) ⊙ ReLU′(z1), dW1 = δ1ᵀ·x) and
once by central finite differences in float64, and compares them element by element:
"""),
    ("cmd", "backprop check-grads --config configs/seed.yaml"),
    ("md", """\
## 3. Three ways to get it wrong

**Forgetting `zero_grad`.** PyTorch adds new gradients onto `.grad`. With `--no-zero-grad` the
gradient norms of three steps keep growing, because each step's gradient is added to the previous
ones; compare with the normal loop:
"""),
    ("cmd", "backprop train --config configs/seed.yaml --steps 3 --no-zero-grad"),
    ("cmd", "backprop train --config configs/seed.yaml --steps 3"),
    ("md", """\
**Too large a learning rate.** With lr 1 the updates overshoot, the loss and the gradients explode,
and the non-finite guard stops training at the first step whose loss or gradient is not a number
(exit code 3). The checkpoint and metrics keep the last good step:
"""),
    ("cmd", "backprop train --config configs/regression.yaml --set optimizer.lr=1 --steps 100 --log-every 5"),
    ("md", """\
**Clipping.** Clipping the total gradient norm at 0.5 bounds every update, and the same learning rate
trains. The logged norm is the one before clipping; the summary counts the clipped steps:
"""),
    ("cmd", "backprop train --config configs/regression.yaml --set optimizer.lr=1 --set train.clip_grad_norm=0.5 "
            "--steps 100 --log-every 10"),
    ("md", """\
## 4. SGD against Adam

`compare-optimizers` trains several optimizers from the same initial weights on the same batches and
shows them side by side; `mean_update_ratio` is how big the updates really are relative to the
weights (SGD's lr·g against Adam's normalised step). `--plot` draws the loss and the gradient norm:
"""),
    ("cmd", "backprop compare-optimizers --config configs/compare.yaml --plot docs/compare.png"),
    ("md", """\
![loss and gradient norm per step, SGD, SGD with momentum and Adam](compare.png)

A learning rate that is too large for one optimizer does not end the comparison: that run is marked
`diverged` at the step its loss or gradients went non-finite, its numbers stop at its last finite
step, the others go on, and the note under the table says how to retry it with `-o`:
"""),
    ("cmd", "backprop compare-optimizers --config configs/regression.yaml -o sgd:lr=5 -o adam:lr=0.01 "
            "--steps 100"),
    ("md", """\
The tables here were laid out for 120 columns (`COLUMNS=120`). In a narrower terminal they shorten
their headers, put long labels on their own line and then hide the least important columns, with a
note saying which; `--wide` shows every column, and `--format json` has every number.

## 5. Your own data

From a CSV file to a trained model you can trust and use: `init`, `train` with held-out rows and
early stopping, `evaluate`, `predict`. The data is the Palmer penguins table shipped in
`configs/data/penguins.csv` (344 penguins of three species; CC0, see `configs/data/README.md`): bill
length and depth, flipper length, body mass, island, sex and year, and two birds with no measurements
at all (`NA`).

`backprop init --csv` reads the file once and writes a commented config fitted to it, one line per
column with its type. The target column holds text, so this is classification with one class per
distinct value; `island` becomes a category (one-hot: one input per island) and `sex`, with two values,
a binary input; the empty cells are filled from the training rows (numbers with their median, `sex`
with its most frequent value: `data.missing: auto`), and `model.input_size: auto` counts the inputs this
makes. `year` holds numbers, so it is an input too (delete it from `data.columns` if you think it
should not be). It also holds
out 20% of the rows for validation (`data.validation: 0.2`, the same share of each species) and
standardizes the features with the training rows' mean and standard deviation (`data.standardize:
true`: body mass in grams is some 250 times bill depth in millimetres, and spreads 400 times wider):
"""),
    ("cmd", "backprop init my.yaml --csv configs/data/penguins.csv --target species"),
    ("md", """\
Train it for up to 300 epochs with early stopping: the model is evaluated after every epoch on all
69 held-out rows and all 275 training rows (`train_loss`, `val_loss`, `train_accuracy`,
`val_accuracy`; a row is printed every tenth evaluation), and training stops once five evaluations in
a row fail to lower `val_loss` by more than 0.001. `--save-best` keeps the checkpoint of the lowest
`val_loss`. `epoch_loss` is the mean loss over every row of an epoch, while `loss` is one batch's:
"""),
    ("cmd", "backprop train --config my.yaml --epochs 300 --set train.early_stopping='{patience: 5, min_delta: 0.001}' "
            "--save-best best.pt"),
    ("md", """\
The run stopped by itself (exit code 0, reason `early stopping`), and the per-class table and the
confusion matrix show where the mistakes are, if any: rows are the true species, columns the predicted
one. `evaluate` measures a checkpoint again, with the scaling and class names stored in it; on its own
validation rows it gives exactly the numbers `train` printed for that step:
"""),
    ("cmd", "backprop evaluate --checkpoint best.pt"),
    ("md", """\
`predict` gives one row per input row, in order: the predicted species and the probability of each.
A column the model does not read (the `id` we copy to the output with `--keep`) is ignored, and the
empty cells of the new birds are filled as in training:
"""),
    ("cmd", "backprop predict --checkpoint best.pt --data configs/data/penguins_new.csv --keep id"),
    ("md", """\
Add `--out predictions.csv` to write them to a file (atomically), or `--format json`. Next: try
`--set data.standardize=false` and watch training slow down (`inspect-grads --config my.yaml` warns
that the raw columns differ in scale by about 1000×), compare optimizers on your data with
`compare-optimizers --config my.yaml`, or use `data.validation: FILE.csv` for a held-out file of your own.
"""),
    ("md", """\
## 6. Vanishing and exploding gradients

Backpropagation multiplies: the gradient that reaches `layer1` is the loss's gradient passed back
through every layer above it, each pass multiplying by that layer's weights and by the slope of its
activation, δ_{k−1} = (δ_k·W_k) ⊙ f′(z_{k−1}). With many layers those factors compound. Two configs
send the same data (the teacher regression of chapter 3) through six hidden layers of 32 units with
the same optimizer (SGD, lr 0.03, momentum 0.9, 500 steps): `configs/deep_sigmoid.yaml` with sigmoids
and torch's default init, `configs/deep_relu.yaml` with ReLUs and Kaiming init. Biases are off, so
each layer has one gradient column.

**Vanishing.** The sigmoid's slope is at most 0.25, and the default init keeps the weights small, so
every layer shrinks the backward signal, here by a factor of 3 to 10. The row of step 1 shows the
gradient norm falling from 0.54 at `layer7` to about 1e-5 at `layer1`; `train` warns about it (the
layers whose gradient norm is over 1000× smaller than the last layer's), and later that the first
layers' updates are too small to move them. The loss never really falls:
"""),
    ("cmd", "backprop train --config configs/deep_sigmoid.yaml --metrics docs/deep_sigmoid.jsonl"),
    ("md", """`backprop plot` draws the run from its metrics file: the loss, the gradient norm of every layer (six
parallel bands, each 3 to 10 times below the next), the update-to-data ratio ‖Δw‖/‖w‖ of each weight
(healthy near 1e-3, the red line; the first layer's sits near 1e-6), the learning rate, the share of
saturated sigmoid units, and the spread of each layer's outputs. No unit is saturated: the outputs sit
near 0.5 with a spread of 0.02 to 0.2, where the sigmoid's slope is near its 0.25. The gradients
vanish anyway, from the small slope and the small weights alone:
"""),
    ("cmd", "backprop plot docs/deep_sigmoid.jsonl --out docs/deep_sigmoid.png"),
    ("md", """![the dashboard of the six-layer sigmoid net: gradient norms in parallel bands, from 1e-5 to 1](deep_sigmoid.png)

No learning rate rescues it: `find-lr` sweeps the lr from 1e-7 to 10 and the loss hardly moves, so it
makes no suggestion at all:
"""),
    ("cmd", "backprop find-lr --config configs/deep_sigmoid.yaml"),
    ("md", """**The cure.** ReLU's slope is 1 wherever a unit is active, and Kaiming init (std √2/√fan_in) keeps
the size of the signal the same from layer to layer, forward and backward. Now the gradient norms of
step 1 are all of the same order (within a factor of 20 of each other, where the sigmoid net's span
five orders of magnitude), and the loss falls from 1.5 to about 0.05 (at most 0.1 for seeds 0, 1
and 2, with this machine's vector kernels and with `ATEN_CPU_CAPABILITY=default`; the sigmoid net
stays above 1 for all of them):
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml"),
    ("md", """`find-lr` suggests a learning rate from the same initial weights, and it is close to the config's 0.03:
"""),
    ("cmd", "backprop find-lr --config configs/deep_relu.yaml"),
    ("md", """**Too large a step.** At lr 0.1 the same net sits at the edge of stability: in the first 50 steps
most units of the middle layers die (output 0 for the whole batch), and whether the net recovers
depends on the seed and even on the rounding of the CPU's vector kernels, so no single number can be
promised for it (with seed 0 the epoch loss after 500 steps has been measured from 0.09 to 0.57 on
different CPUs). With seed 1 it does not recover with either kernel setting of this machine: by
step 100 every unit of `layer6` is dead, so the net outputs 0 for every input, every gradient is
exactly 0 from then on, and the loss stays at about 2.1. The dashboard shows the dead-unit fractions:
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml --set optimizer.lr=0.1 --set seed=1 --plot docs/deep_relu.png"),
    ("md", """![the dashboard of the six-layer ReLU net at lr 0.1, seed 1: layer6's dead-unit fraction climbs to 1](deep_relu.png)

**Exploding.** Scale every layer up instead, with an init gain of 4 instead of ReLU's √2: each layer
now multiplies the signal by about 4/√2 ≈ 2.8 (ReLU passes half of its variance), so the output is
some 2.8⁶ ≈ 500 times too large, the loss of step 1 is about 1e5, the gradients of every layer are
1e4 to 1e7, and the first update sends everything to infinity. The non-finite guard stops the run
(exit code 3); `train.clip_grad_norm` or a smaller gain would prevent it:
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml --set model.init_gain=4 --steps 3 --log-every 1"),
    *SECTION_6B,
    ("md", """\
## 7. Backprop by hand

Chapter 2's `check-grads` says that the chain rule written out layer by layer agrees with autograd;
`explain --config` shows it happen on the seed's 10→20→1 net, from the loss back: each layer's forward
(z = h·Wᵀ + b, h = ReLU(z)) with the shapes and the numbers of one row of the batch (`--sample`), then
dL/dŷ, δ, dW = δᵀ·h, db = Σ δ and the δ passed down to the layer below, with autograd's `.grad`
beside. The loss is chapter 2's 1.3523, and every hand-written gradient equals autograd's to float64
round-off (at most 1e-15):
"""),
    ("cmd", "backprop explain --config configs/seed.yaml"),
    ("md", """`--format json` has every array whole (`grad_weight` shaped [out][in], as `.grad` is), and
`--batch K` takes another batch of the data order.

`backprop graph` draws the graph autograd builds: each operation node is a `grad_fn` (the node
`backward()` calls), each leaf a parameter, each with its data and its grad. Chapter 1's example first:
the two leaves are the weights, with their data 0.5 and 0.3 and the grads −0.42 and −0.7 that
`explain` worked out by hand; `MulBackward0`, `PowBackward0` and `RsubBackward1` are ŷ = w2·z1,
(y − ŷ)² and y − ŷ. The DOT text goes to stdout (Graphviz's `dot -Tsvg` draws it):
"""),
    ("cmd", "backprop graph --example"),
    ("md", """The seed's net, drawn (by Graphviz's `dot` when it is installed, else by matplotlib): `AddmmBackward0`
is z = b + h·Wᵀ, `TBackward0` the transpose of W, `ReluBackward0` the activation; `--saved` adds
the tensors each operation keeps for its backward:
"""),
    ("cmd", "backprop graph --config configs/seed.yaml --out docs/graph_seed.png"),
    ("md", """![the autograd graph of the seed net: the MSE loss, two Addmm layers, a ReLU, four parameters](graph_seed.png)

Now write a backward yourself. `exercise start` writes a file with the forward given and a `backward`
to fill in, its docstring giving every shape; `exercise check` runs your file as you wrote it, in a
separate process with a time limit, on three sizes of float64 inputs, and compares each gradient
with autograd's: exact, approximate (round-off) or wrong, and whether its shape is right:
"""),
    ("cmd", "backprop exercise list"),
    ("cmd", "backprop exercise start linear"),
    ("cmd", "backprop exercise check linear.py"),
    ("md", """A first try (`docs/exercises/linear_transposed.py`) writes `dw = x.T @ dout`: the check names `dw`,
says its shape is the transpose of `w`'s, and gives the hint for it:
"""),
    ("cmd", "backprop exercise check docs/exercises/linear_transposed.py"),
    ("md", """With `dw = dout.T @ x` every gradient agrees (`docs/exercises/linear.py`):
"""),
    ("cmd", "backprop exercise check docs/exercises/linear.py"),
    ("md", """`two_layer_net` is the seed's whole net: four gradients through the loss, the second layer, the ReLU
and the first layer, the chain rule of `explain --config` written by you. One answer
(`docs/exercises/two_layer_net.py`; try it yourself first), and with `--reveal` the reference:
"""),
    ("cmd", "backprop exercise start two_layer_net"),
    ("cmd", "backprop exercise check docs/exercises/two_layer_net.py --reveal"),
    ("md", """A file that cannot be checked (no `backward`, an exception, the wrong number of results, a loop
that never ends, a missing import) gives one `error:` line and your own traceback, trimmed to your
file (exit code 2). More exercises: `relu`, `tanh`, `sigmoid`, `mse`, `softmax_cross_entropy`,
`layernorm` and `batchnorm` (training mode).
"""),
]

PARTS += CHAPTER_OVERFITTING  # after the last chapter

# --------------------------------------------------------------------------- the claims of the prose
#
# Every claim the prose makes about an output is checked here, with its tolerance, by tests/test_docs.py
# on the run it makes (the same commands, in the same order). `about X` in the prose means within the
# tolerance written next to its check.


def table(out: str) -> list[dict[str, float]]:
    """The step rows of a train output: {column: number}; ``wK`` columns are named ``layerK.weight``."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("step "))
    names = [re.sub(r"^w(\d+)$", r"layer\1.weight", h) for h in lines[at].split()]
    rows = []
    for line in lines[at + 1:]:
        cells = line.split()
        if cells and cells[0].isdigit() and len(cells) >= 3:
            row = {}
            for name, cell in zip(names, cells):
                try:
                    row[name] = float(cell)
                except ValueError:
                    pass
            rows.append(row)
    return rows


def number(pattern: str, out: str) -> float:
    m = re.search(pattern, out)
    assert m, f"{pattern!r} not in the output"
    return float(m.group(1))


def layer_norms(row: dict) -> list[float]:
    return [row[f"layer{k}.weight"] for k in range(1, 8)]


def within(value: float, target: float, factor: float) -> bool:
    return target / factor <= value <= target * factor


def _explain(out, ctx):
    assert re.search(r"∂L/∂w1\s+-0\.42\s+-0\.42\s+0\n", out) and re.search(r"∂L/∂w2\s+-0\.7\s+-0\.7\s+0\n", out)
    before, after = (float(v) for v in re.search(r"loss (\S+) → (\S+) after one step", out).groups())
    assert after < before


def _explain5(out, ctx):
    losses = [r["loss"] for r in table(out)]
    assert len(losses) == 5 and all(b < a for a, b in zip(losses, losses[1:])), losses


def _inspect(out, ctx):
    assert "5 of 20 hidden units (25%)" in out
    assert re.search(r"layer1\.weight\s+20×10(\s+\S+){6}\s+0\.25\s", out)


def _check(out, ctx):
    assert out.count("PASS") == 5 and "all gradients agree: PASS" in out


def _no_zero_grad(out, ctx):
    norms = [r["grad_norm"] for r in table(out)]
    assert len(norms) == 3 and norms[0] < norms[1] < norms[2], norms


def _zero_grad(out, ctx):
    norms = [r["grad_norm"] for r in table(out)]
    assert len(norms) == 3 and norms[0] > norms[1] > norms[2], norms  # the normal loop: no growth


def _explodes(out, ctx):
    rows = table(out)
    assert max(r["loss"] for r in rows) > 1e6 * rows[0]["loss"] and "non-finite value" in out


def _clipped(out, ctx):
    assert number(r"epoch loss: (\S+):", out) < 0.5 * table(out)[0]["loss"]  # it trains
    assert re.search(r"clipped:\s+\d+ of 100 step", out)


def _compare_diverged(out, ctx):
    assert re.search(r"sgd lr=5\s+diverged at step \d+", out) and re.search(r"adam lr=0\.01\s+done", out)


def _init(out, ctx):
    assert "3 classes" in out and "344 rows" in out and "19 missing cells" in out
    assert "7 inputs (5 numbers, 1 categories, 1 binary: 9 model inputs)" in out  # island one-hot, sex binary
    # "body mass in grams is about 250 times bill depth in millimetres" (within a factor of 1.5)
    import csv

    with open(ctx.cwd / "configs" / "data" / "penguins.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["body_mass_g"] not in ("", "NA")]
    mass = sum(float(r["body_mass_g"]) for r in rows) / len(rows)
    depth = sum(float(r["bill_depth_mm"]) for r in rows) / len(rows)
    assert within(mass / depth, 250, 1.2), mass / depth  # "some 250 times" (within 20%)
    spread = _std([float(r["body_mass_g"]) for r in rows]) / _std([float(r["bill_depth_mm"]) for r in rows])
    assert within(spread, 400, 1.2), spread  # "spreads 400 times wider" (the ratio of their std, within 20%)


def _std(values):
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _penguins(out, ctx):
    assert "275 training rows" in out and "69 of 344 rows" in out and "(early stopping)" in out
    assert re.search(r"patience\s+5", out)


def _evaluate(out, ctx):
    trained = ctx.outputs[PENGUINS]
    best = re.search(r"best loss (\S+) at step (\d+)", trained).groups()
    assert re.search(rf"loss\s+{re.escape(best[0])}\n", out), best  # exactly the number train printed
    assert f"(step {best[1]})" in out


def _scale_warning(out, ctx):
    """'inspect-grads --config my.yaml warns that the raw columns differ in scale by about 1000×' (within 2×)"""
    text, code = ctx.run("backprop inspect-grads --config my.yaml --set data.standardize=false")
    assert code == 0
    assert within(number(r"differ in scale by ([\d.e+]+)×", text), 1000, 2)


def _sigmoid(out, ctx):
    first = table(out)[0]
    norms = layer_norms(first)
    ratios = [b / a for a, b in zip(norms, norms[1:])]
    assert all(3 <= r <= 10 for r in ratios), ratios  # "every layer shrinks it by a factor of 3 to 10"
    assert within(norms[-1], 0.54, 1.05) and within(norms[0], 1e-5, 3)  # "0.54 at layer7, about 1e-5 at layer1"
    assert "over 1,000× smaller than layer7's" in out and "update-to-data ratio below 1e-05" in out
    assert number(r"epoch loss: (\S+):", out) > 0.8 * first["loss"]  # "never really falls"


def _sigmoid_metrics(out, ctx):
    import json

    records = [json.loads(line) for line in (ctx.cwd / "docs" / "deep_sigmoid.jsonl").read_text().splitlines()]
    ratios = [r["update_ratios"]["layer1.weight"] for r in records if r.get("update_ratios")]
    median = sorted(ratios)[len(ratios) // 2]
    assert within(median, 1e-6, 3), median  # "the first layer's sits near 1e-6" (within 3×)
    acts = [r["activations"] for r in records if r.get("activations")]
    spreads = [a[layer]["std"] for a in acts for layer in a]
    assert 0.02 <= min(spreads) and max(spreads) <= 0.2, (min(spreads), max(spreads))  # "a spread of 0.02 to 0.2"
    means = [a[layer]["mean"] for a in acts for layer in a]
    assert all(0.3 <= m <= 0.7 for m in means)  # "near 0.5"
    sat = [a[layer]["saturated_fraction"] for a in acts for layer in a]
    assert max(sat) == 0  # "no unit is saturated"


def _noise(out, ctx):
    assert "no suggestion: the smoothed loss never fell 10% below its start" in out
    assert re.search(r"valley of the smoothed loss \(the suggestion\)\s+none", out)


def _relu(out, ctx):
    first = table(out)[0]
    norms = layer_norms(first)
    assert max(norms) / min(norms) <= 20, norms  # "within a factor of 20 of each other"
    assert within(first["loss"], 1.5, 1.1)  # "falls from 1.5"
    assert number(r"epoch loss: (\S+):", out) <= 0.1  # "to about 0.05" (at most 0.1)
    sigmoid = layer_norms(table(ctx.outputs[SIGMOID])[0])
    assert max(sigmoid) / min(sigmoid) >= 1e4  # "span five orders of magnitude" (at least four)


def _relu_lr(out, ctx):
    assert within(number(r"steepest descent of the smoothed loss\s+(\S+)", out), 0.03, 3)  # "close to 0.03"


def _dead(out, ctx):
    assert "of the units dead" in out
    later = [r for r in table(out) if r["step"] >= 100]
    assert later and all(r["grad_norm"] == 0 for r in later)  # "every gradient is exactly 0 from then on"
    assert within(number(r"epoch loss: (\S+):", out), 2.1, 1.1)  # "stays at about 2.1"


def _gain4(out, ctx):
    first = table(out)[0]
    assert within(first["loss"], 1e5, 3)  # "about 1e5"
    assert all(1e4 <= n <= 1e7 for n in layer_norms(first))
    assert "non-finite value at step 2" in out


def _explain_config(out, ctx):
    assert "1.3523" in out and "1.3523" in ctx.outputs["backprop train --config configs/seed.yaml"]
    assert number(r"largest difference (\S+):", out) <= 1e-15
    assert out.index("layer2 (output layer)") < out.index("\nlayer1\n")


def _graph_example(out, ctx):
    assert re.search(r'w1 \(scalar\)\\ndata 0\.5\\ngrad -0\.42"', out)
    assert re.search(r'w2 \(scalar\)\\ndata 0\.3\\ngrad -0\.7"', out)
    for op in ("MulBackward0", "PowBackward0", "RsubBackward1"):
        assert op in out


def _graph_seed(out, ctx):
    assert (ctx.cwd / "docs" / "graph_seed.png").read_bytes().startswith(b"\x89PNG") and "10 nodes" in out


def _template_fails(out, ctx):
    assert out.count("not computed (None)") == 3 and "not yet: 0 of 3" in out


def _transposed(out, ctx):
    assert re.search(r"\n  dw\s+wrong\s+shape wrong: \[3, 5\], want \[5, 3\]", out) and "dw is transposed" in out


def _passes(out, ctx):
    assert "passed: all" in out and "wrong" not in out


PENGUINS = ("backprop train --config my.yaml --epochs 300 --set train.early_stopping='{patience: 5, min_delta: 0.001}' "
            "--save-best best.pt")
SIGMOID = "backprop train --config configs/deep_sigmoid.yaml --metrics docs/deep_sigmoid.jsonl"

CLAIMS = {
    "backprop explain": [_explain],
    "backprop explain --updates 5": [_explain5],
    "backprop inspect-grads --config configs/seed.yaml": [_inspect],
    "backprop check-grads --config configs/seed.yaml": [_check],
    "backprop train --config configs/seed.yaml --steps 3 --no-zero-grad": [_no_zero_grad],
    "backprop train --config configs/seed.yaml --steps 3": [_zero_grad],
    "backprop train --config configs/regression.yaml --set optimizer.lr=1 --steps 100 --log-every 5": [_explodes],
    "backprop train --config configs/regression.yaml --set optimizer.lr=1 --set train.clip_grad_norm=0.5 "
    "--steps 100 --log-every 10": [_clipped],
    "backprop compare-optimizers --config configs/regression.yaml -o sgd:lr=5 -o adam:lr=0.01 --steps 100":
        [_compare_diverged],
    "backprop init my.yaml --csv configs/data/penguins.csv --target species": [_init],
    PENGUINS: [_penguins],
    "backprop evaluate --checkpoint best.pt": [_evaluate],
    "backprop predict --checkpoint best.pt --data configs/data/penguins_new.csv --keep id": [_scale_warning],
    SIGMOID: [_sigmoid],
    "backprop plot docs/deep_sigmoid.jsonl --out docs/deep_sigmoid.png": [_sigmoid_metrics],
    "backprop find-lr --config configs/deep_sigmoid.yaml": [_noise],
    "backprop train --config configs/deep_relu.yaml": [_relu],
    "backprop find-lr --config configs/deep_relu.yaml": [_relu_lr],
    "backprop train --config configs/deep_relu.yaml --set optimizer.lr=0.1 --set seed=1 --plot docs/deep_relu.png":
        [_dead],
    "backprop train --config configs/deep_relu.yaml --set model.init_gain=4 --steps 3 --log-every 1": [_gain4],
    "backprop explain --config configs/seed.yaml": [_explain_config],
    "backprop graph --example": [_graph_example],
    "backprop graph --config configs/seed.yaml --out docs/graph_seed.png": [_graph_seed],
    "backprop exercise check linear.py": [_template_fails],
    "backprop exercise check docs/exercises/linear_transposed.py": [_transposed],
    "backprop exercise check docs/exercises/linear.py": [_passes],
    "backprop exercise check docs/exercises/two_layer_net.py --reveal": [_passes],
}


def scratch() -> Path:
    """A temporary folder that looks like the repository root (configs/, docs/ with docs/exercises/)."""
    tmp = Path(tempfile.mkdtemp(prefix="backprop-tutorial-"))
    shutil.copytree(ROOT / "configs", tmp / "configs")
    (tmp / "docs").mkdir()
    shutil.copytree(ROOT / "docs" / "exercises", tmp / "docs" / "exercises")
    return tmp


class Context:
    """What a claim may look at: the outputs so far (command → output), the folder, and more runs."""

    def __init__(self, cwd: Path, run):
        self.cwd, self.outputs, self._run = Path(cwd), {}, run

    def run(self, command: str) -> tuple[str, int]:
        return self._run(command)


def check_claims(command: str, output: str, ctx: Context) -> None:
    """Every claim the prose makes about this command's output (AssertionError naming the first that fails)."""
    ctx.outputs[command] = output
    for claim in CLAIMS.get(command, []):
        try:
            claim(output, ctx)
        except Exception as e:  # a number the claim looks for is not there either
            raise AssertionError(f"{claim.__name__} of `{command}`: {e}\n{output[-3000:]}") from None


WIDTH = 120  # columns: the plain output is laid out as for COLUMNS=120 (full headers for the classic net)


def run(command: str, cwd: Path) -> tuple[str, int]:
    """Run `backprop ...` in-process as a user would from a shell (plain output, as when piped, with
    COLUMNS=120 so that the tables are laid out for a 120-column page)."""
    from typer.testing import CliRunner

    from backprop_cli.cli.app import app

    args = shlex.split(command)
    assert args[0] == "backprop", command
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args[1:], env={"COLUMNS": str(WIDTH)})
    finally:
        os.chdir(old)
    return result.output, result.exit_code


def main(draft: bool = False) -> None:
    """``--draft``: write the page even when a claim fails (listing them), to see what the text must say."""
    tmp = scratch()
    out, failed = [], []
    ctx = Context(tmp, lambda command: run(command, tmp))
    try:
        for kind, text in PARTS:
            if kind == "md":
                out.append(text)
                continue
            output, code = run(text, tmp)
            try:
                check_claims(text, output, ctx)
            except AssertionError as e:
                if not draft:
                    raise
                failed.append(str(e).splitlines()[0])
            block = f"```console\n$ {text}\n{output.rstrip()}\n"
            if code:
                block += f"[exit code {code}]\n"
            out.append(block + "```\n")
        for picture in ("compare.png", "deep_sigmoid.png", "deep_relu.png", "graph_seed.png", "deep_sigmoid_bn.png"):
            shutil.copy(tmp / "docs" / picture, ROOT / "docs" / picture)
    finally:
        shutil.rmtree(tmp)
    text = "\n".join(out)
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    (ROOT / "docs" / "tutorial.md").write_text(text)
    print("wrote docs/tutorial.md" + (" (a draft: these claims fail)" if failed else ""))
    for f in failed:
        print("  " + f)


if __name__ == "__main__":
    main(draft="--draft" in sys.argv[1:])
