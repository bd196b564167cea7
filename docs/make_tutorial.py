"""Regenerate docs/tutorial.md: python docs/make_tutorial.py

Every command below runs for real (in a scratch copy of configs/, as if from the repository root) and
its output is pasted under it, so the tutorial shows exactly what the tool prints. A command that is
meant to fail is followed by its exit code. tests/test_docs.py runs every command again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ---- section 6b and chapter 7 (issue 25: the cures): kept in blocks of their own, inserted into PARTS below.
# Every claim their prose makes is asserted by tests/test_tutorial_cures.py.

SECTION_6B: list[tuple[str, str]] = [
    ("md", """\
## 6b. The cures: batch normalization and skip connections

ReLU with Kaiming init is one cure; two more change the network instead of its activation, and keep
the sigmoids. Both are config keys (README, "Normalization, dropout and residual connections").

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
## 7. Over-fitting and its cures

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
own CSV data, and finally deep networks whose gradients vanish or explode. Run the commands from the repository root after the set-up in the
[README](../README.md); every output below was pasted from a real run (`python docs/make_tutorial.py`
regenerates this page, and a test runs every command in it).

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

`backprop init --csv` reads the file once and writes a commented config fitted to it. The target
column holds text, so this is classification with one class per distinct value; the text columns
`island` and `sex` cannot be inputs and are left out; the rows with missing cells are counted, and the
config drops them (`data.missing: drop_rows`). `year` holds numbers, so it is a feature too (delete
it from `data.features` and set `model.input_size: 4` if you think it should not be). It also holds
out 20% of the rows for validation (`data.validation: 0.2`, the same share of each species) and
standardizes the features with the training rows' mean and standard deviation (`data.standardize:
true`: body mass in grams is a thousand times larger than bill depth in millimetres):
"""),
    ("cmd", "backprop init my.yaml --csv configs/data/penguins.csv --target species"),
    ("md", """\
Train it for up to 300 epochs with early stopping: the model is evaluated after every epoch on all
69 held-out rows and all 273 training rows (`train_loss`, `val_loss`, `train_accuracy`,
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
Columns the model does not read (`island`, and the `id` we copy to the output with `--keep`) are ignored:
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
send the same data (the teacher regression of chapter 3) through six hidden layers of 32 units:
`configs/deep_sigmoid.yaml` with sigmoids and torch's default init, `configs/deep_relu.yaml` with
ReLUs and Kaiming init. Biases are off, so each layer has one gradient column.

**Vanishing.** The sigmoid's slope is at most 0.25, and the default init keeps the weights small, so
every layer shrinks the backward signal, here by a factor of 3 to 10. The row of step 1 shows the
gradient norm falling from 0.54 at `layer7` to about 1e-5 at `layer1`; `train` warns about it (the
layers whose gradient norm is over 1000× smaller than the last layer's), and later that the first
layers' updates are too small to move them. The loss never really falls:
"""),
    ("cmd", "backprop train --config configs/deep_sigmoid.yaml --metrics docs/deep_sigmoid.jsonl"),
    ("md", """`backprop plot` draws the run from its metrics file: the loss, the gradient norm of every layer (six
parallel bands, each an order of magnitude below the next), the update-to-data ratio ‖Δw‖/‖w‖ of each
weight (healthy near 1e-3, the red line; the first layers' sit near 1e-6), the learning rate, the
share of saturated sigmoid units, and the spread of each layer's outputs. No unit is saturated: the
outputs sit near 0.5 with a spread of 0.05 to 0.14, where the sigmoid's slope is near its 0.25. The
gradients vanish anyway, from the small slope and the small weights alone:
"""),
    ("cmd", "backprop plot docs/deep_sigmoid.jsonl --out docs/deep_sigmoid.png"),
    ("md", """![the dashboard of the six-layer sigmoid net: gradient norms in parallel bands, from 1e-5 to 1](deep_sigmoid.png)

No learning rate rescues it: `find-lr` sweeps the lr from 1e-7 to 10 and the loss hardly moves, so it
says its suggestions are noise:
"""),
    ("cmd", "backprop find-lr --config configs/deep_sigmoid.yaml"),
    ("md", """**The cure.** ReLU's slope is 1 wherever a unit is active, and Kaiming init (std √2/√fan_in) keeps
the size of the signal the same from layer to layer, forward and backward. Now every layer's gradient
norm is of the same order, and the loss falls from 1.5 to about 0.1. But the warnings show what lr 0.1
with momentum does to ReLUs: most units of the middle layers die (output 0 for the whole batch) in the
first 50 steps, and the dashboard shows it:
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml --plot docs/deep_relu.png"),
    ("md", """![the dashboard of the six-layer ReLU net at lr 0.1: the dead-unit fractions climb past 0.5](deep_relu.png)

`find-lr` suggests a learning rate from the same initial weights:
"""),
    ("cmd", "backprop find-lr --config configs/deep_relu.yaml"),
    ("md", """With its suggestion the units stay alive, no warning is printed, and the loss ends at about 0.04:
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml --set optimizer.lr=0.031"),
    ("md", """**Exploding.** Scale every layer up instead, with an init gain of 4 instead of ReLU's √2: each layer
now multiplies the signal by about 4/√2 ≈ 2.8 (ReLU passes half of its variance), so the output is
some 2.8⁶ ≈ 500 times too large, the loss of step 1 is 1e5, the gradients of every layer are 1e4 to
1e6, and the first update sends everything to infinity. The non-finite guard stops the run (exit
code 3); `train.clip_grad_norm` or a smaller gain would prevent it:
"""),
    ("cmd", "backprop train --config configs/deep_relu.yaml --set model.init_gain=4 --steps 3 --log-every 1"),
    *SECTION_6B,
]


PARTS += CHAPTER_OVERFITTING  # after the last chapter


def scratch() -> Path:
    """A temporary folder that looks like the repository root (configs/ and docs/)."""
    tmp = Path(tempfile.mkdtemp(prefix="backprop-tutorial-"))
    shutil.copytree(ROOT / "configs", tmp / "configs")
    (tmp / "docs").mkdir()
    return tmp


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


def main() -> None:
    tmp = scratch()
    out = []
    try:
        for kind, text in PARTS:
            if kind == "md":
                out.append(text)
                continue
            output, code = run(text, tmp)
            block = f"```console\n$ {text}\n{output.rstrip()}\n"
            if code:
                block += f"[exit code {code}]\n"
            out.append(block + "```\n")
        for picture in ("compare.png", "deep_sigmoid.png", "deep_relu.png", "deep_sigmoid_bn.png"):
            shutil.copy(tmp / "docs" / picture, ROOT / "docs" / picture)
    finally:
        shutil.rmtree(tmp)
    text = "\n".join(out)
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    (ROOT / "docs" / "tutorial.md").write_text(text)
    print("wrote docs/tutorial.md")


if __name__ == "__main__":
    main()
