"""The exercises of ``backprop exercise``: write a backward by hand, checked against autograd.

One table entry per exercise: its forward (source text: the same text is written into the learner's
file and run by the checker), its reference backward (source text: ``--reveal`` prints it and the tests
run it), the shape of every argument in letters, three concrete sizes for the letters, how each input is
drawn, and a hint per gradient. No torch here: ``exercise list`` and ``exercise start`` never import it.

The sizes are chosen so that a wrong answer cannot hide: the letters differ (a transposed result has the
wrong shape) except in one square case (where a transposed result has the right shape and wrong values),
every input is random (no ones or zeros: a missing γ or a dropped ``dout`` shows), and every batch has
more than one row (a missing 1/N shows).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

EPS = 1e-5  # layernorm and batchnorm


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str  # one line, for `exercise list`
    forward: str  # source of `def forward(...)`
    solution: str  # source of the reference `def backward(...)`
    args: tuple[str, ...]  # backward's arguments, in order
    grads: tuple[str, ...]  # what backward returns, in order
    wrt: tuple[str, ...]  # the forward argument each gradient is of (same order as grads)
    shapes: dict[str, str]  # every argument (and "out") → its shape in letters, e.g. "N, D"
    meaning: dict[str, str]  # every argument → what it is
    cases: tuple[dict[str, int], ...]  # three sizes for the letters
    hints: dict[str, str]  # each gradient → the hint shown when it is wrong for no recognisable reason
    kinds: dict[str, str] = field(default_factory=dict)  # argument → how it is drawn (default: normal)
    has_dout: bool = True  # backward receives dout (else the forward is a scalar loss)
    rows: str = "N"  # the letter of the batch rows (for the 1/N hint)
    mean_over: str = ""  # a loss's mean is over these letters' elements, e.g. "N, K" (for the 1/n hint)

    @property
    def forward_args(self) -> tuple[str, ...]:
        return tuple(a for a in self.args if a != "dout")


def _src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


EXERCISES: dict[str, Exercise] = {}


def _add(e: Exercise) -> None:
    EXERCISES[e.name] = e


_add(Exercise(
    name="linear",
    title="a fully connected layer: out = x @ w.T + b; write (dx, dw, db)",
    forward=_src("""
        def forward(x, w, b):
            return x @ w.T + b
    """),
    solution=_src("""
        def backward(x, w, b, dout):
            dx = dout @ w          # [N, M] @ [M, D] -> [N, D]
            dw = dout.T @ x        # [M, N] @ [N, D] -> [M, D]: w's shape
            db = dout.sum(dim=0)   # b is added to every row: sum over the rows -> [M]
            return dx, dw, db
    """),
    args=("x", "w", "b", "dout"), grads=("dx", "dw", "db"), wrt=("x", "w", "b"),
    shapes={"x": "N, D", "w": "M, D", "b": "M", "dout": "N, M", "out": "N, M"},
    meaning={"x": "the inputs, one row per sample", "w": "the weights, one row per output unit",
             "b": "the biases", "dout": "dL/d(out), the gradient arriving from the layer above"},
    cases=({"N": 4, "D": 3, "M": 5}, {"N": 6, "D": 6, "M": 6}, {"N": 7, "D": 2, "M": 3}),
    hints={"dx": "every input reaches every output through w: dx = dout @ w, of x's shape [N, D]",
           "dw": "dw = dout.T @ x, of w's shape [M, D] (each weight w[m, d] meets x[:, d] and dout[:, m])",
           "db": "b is added to every row, so its gradient sums dout over the rows: db = dout.sum(dim=0)"},
))

_add(Exercise(
    name="relu",
    title="ReLU: out = max(x, 0); write dx",
    forward=_src("""
        def forward(x):
            return torch.clamp(x, min=0)
    """),
    solution=_src("""
        def backward(x, dout):
            return dout * (x > 0)  # the gradient passes where x > 0 and stops elsewhere
    """),
    args=("x", "dout"), grads=("dx",), wrt=("x",),
    shapes={"x": "N, D", "dout": "N, D", "out": "N, D"},
    meaning={"x": "the inputs (none is exactly 0)", "dout": "dL/d(out)"},
    cases=({"N": 4, "D": 3}, {"N": 5, "D": 8}, {"N": 3, "D": 6}),
    hints={"dx": "ReLU′(x) is 1 where x > 0 and 0 elsewhere; multiply it by dout: dx = dout * (x > 0)"},
    kinds={"x": "away_from_zero"},
))

_add(Exercise(
    name="tanh",
    title="tanh: out = tanh(x); write dx",
    forward=_src("""
        def forward(x):
            return torch.tanh(x)
    """),
    solution=_src("""
        def backward(x, dout):
            t = torch.tanh(x)
            return dout * (1 - t**2)  # tanh′(x) = 1 − tanh(x)²
    """),
    args=("x", "dout"), grads=("dx",), wrt=("x",),
    shapes={"x": "N, D", "dout": "N, D", "out": "N, D"},
    meaning={"x": "the inputs", "dout": "dL/d(out)"},
    cases=({"N": 4, "D": 3}, {"N": 5, "D": 8}, {"N": 3, "D": 6}),
    hints={"dx": "tanh′(x) = 1 − tanh(x)² (of the output, not of x); multiply it by dout"},
))

_add(Exercise(
    name="sigmoid",
    title="sigmoid: out = 1 / (1 + exp(−x)); write dx",
    forward=_src("""
        def forward(x):
            return 1 / (1 + torch.exp(-x))
    """),
    solution=_src("""
        def backward(x, dout):
            s = 1 / (1 + torch.exp(-x))
            return dout * s * (1 - s)  # σ′(x) = σ(x)·(1 − σ(x))
    """),
    args=("x", "dout"), grads=("dx",), wrt=("x",),
    shapes={"x": "N, D", "dout": "N, D", "out": "N, D"},
    meaning={"x": "the inputs", "dout": "dL/d(out)"},
    cases=({"N": 4, "D": 3}, {"N": 5, "D": 8}, {"N": 3, "D": 6}),
    hints={"dx": "σ′(x) = σ(x)·(1 − σ(x)), with σ(x) the forward's output; multiply it by dout"},
))

_add(Exercise(
    name="mse",
    title="mean squared error: L = mean((y_hat − y)²); write dy_hat",
    forward=_src("""
        def forward(y_hat, y):
            return ((y_hat - y) ** 2).mean()
    """),
    solution=_src("""
        def backward(y_hat, y):
            # the mean is over every element (N·K of them); d(u²)/du = 2u
            return 2 * (y_hat - y) / y_hat.numel()
    """),
    args=("y_hat", "y"), grads=("dy_hat",), wrt=("y_hat",),
    shapes={"y_hat": "N, K", "y": "N, K", "out": ""},
    meaning={"y_hat": "the predictions", "y": "the targets"},
    cases=({"N": 5, "K": 1}, {"N": 4, "K": 3}, {"N": 8, "K": 2}),
    hints={"dy_hat": "dL/dŷ = 2(ŷ − y)/n with n = ŷ.numel(), every element of the mean"},
    has_dout=False, mean_over="N, K",
))

_add(Exercise(
    name="softmax_cross_entropy",
    title="softmax + cross-entropy: L = mean over rows of −log softmax(logits)[target]; write dlogits",
    forward=_src("""
        def forward(logits, target):
            log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            return -log_p[torch.arange(logits.shape[0]), target].mean()
    """),
    solution=_src("""
        def backward(logits, target):
            n = logits.shape[0]
            p = torch.softmax(logits, dim=1)
            p[torch.arange(n), target] -= 1   # softmax − one-hot(target)
            return p / n                      # the loss is a mean over the N rows
    """),
    args=("logits", "target"), grads=("dlogits",), wrt=("logits",),
    shapes={"logits": "N, C", "target": "N", "out": ""},
    meaning={"logits": "the scores, one row per sample, one column per class",
             "target": "the true class of each row (int64, 0 … C−1)"},
    cases=({"N": 4, "C": 3}, {"N": 6, "C": 5}, {"N": 3, "C": 7}),
    hints={"dlogits": "dL/dlogits = (softmax(logits) − onehot(target)) / N, row by row"},
    kinds={"target": "labels:C"}, has_dout=False, mean_over="N",
))

_NORM_SOLUTION = """
    def backward(x, gamma, beta, dout):
        n = x.shape[{dim}]
        mean = x.mean(dim={dim}, keepdim=True)
        var = ((x - mean) ** 2).mean(dim={dim}, keepdim=True)   # biased: divide by n
        inv_std = 1 / torch.sqrt(var + {eps})
        x_hat = (x - mean) * inv_std
        dgamma = (dout * x_hat).sum(dim=0)
        dbeta = dout.sum(dim=0)
        dx_hat = dout * gamma
        # three paths reach x: through x_hat directly, through the mean, through the variance
        dx = inv_std / n * (n * dx_hat - dx_hat.sum(dim={dim}, keepdim=True)
                            - x_hat * (dx_hat * x_hat).sum(dim={dim}, keepdim=True))
        return dx, dgamma, dbeta
"""

_NORM_FORWARD = """
    def forward(x, gamma, beta):
        mean = x.mean(dim={dim}, keepdim=True)
        var = ((x - mean) ** 2).mean(dim={dim}, keepdim=True)
        x_hat = (x - mean) / torch.sqrt(var + {eps})
        return gamma * x_hat + beta
"""

_add(Exercise(
    name="layernorm",
    title="layer norm (over each row's D features, with γ and β); write (dx, dgamma, dbeta)",
    forward=_src(_NORM_FORWARD.format(dim=1, eps=EPS)),
    solution=_src(_NORM_SOLUTION.format(dim=1, eps=EPS)),
    args=("x", "gamma", "beta", "dout"), grads=("dx", "dgamma", "dbeta"), wrt=("x", "gamma", "beta"),
    shapes={"x": "N, D", "gamma": "D", "beta": "D", "dout": "N, D", "out": "N, D"},
    meaning={"x": "the inputs, normalised row by row (mean and biased variance over D)",
             "gamma": "the scale", "beta": "the shift", "dout": "dL/d(out)"},
    cases=({"N": 4, "D": 5}, {"N": 6, "D": 6}, {"N": 3, "D": 8}),
    hints={"dx": "with x̂ = (x − mean)/σ and dx̂ = dout·γ, per row: dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) / σ "
                 "(the mean and the variance depend on x too)",
           "dgamma": "γ multiplies x̂ in every row: dgamma = (dout * x_hat).sum(dim=0)",
           "dbeta": "β is added to every row: dbeta = dout.sum(dim=0)"},
    kinds={"gamma": "scale"}, rows="N",
))

_add(Exercise(
    name="batchnorm",
    title="batch norm in training mode (over the N rows of each feature, γ and β); write (dx, dgamma, dbeta)",
    forward=_src(_NORM_FORWARD.format(dim=0, eps=EPS)),
    solution=_src(_NORM_SOLUTION.format(dim=0, eps=EPS)),
    args=("x", "gamma", "beta", "dout"), grads=("dx", "dgamma", "dbeta"), wrt=("x", "gamma", "beta"),
    shapes={"x": "N, D", "gamma": "D", "beta": "D", "dout": "N, D", "out": "N, D"},
    meaning={"x": "the batch, normalised column by column with the batch's own mean and biased variance "
                  "(training mode)", "gamma": "the scale", "beta": "the shift", "dout": "dL/d(out)"},
    cases=({"N": 8, "D": 3}, {"N": 5, "D": 5}, {"N": 16, "D": 2}),
    hints={"dx": "with x̂ = (x − mean)/σ and dx̂ = dout·γ, per column: dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) / σ; "
                 "the batch statistics depend on every row, and the variance is the biased one (÷ N)",
           "dgamma": "γ multiplies x̂ in every row: dgamma = (dout * x_hat).sum(dim=0)",
           "dbeta": "β is added to every row: dbeta = dout.sum(dim=0)"},
    kinds={"gamma": "scale"},
))

_add(Exercise(
    name="two_layer_net",
    title="the seed's net, 10 → 20 → 1 (linear, ReLU, linear, MSE): write its whole backward",
    forward=_src("""
        def forward(x, w1, b1, w2, b2, y):
            z1 = x @ w1.T + b1
            h = torch.clamp(z1, min=0)
            y_hat = h @ w2.T + b2
            return ((y_hat - y) ** 2).mean()
    """),
    solution=_src("""
        def backward(x, w1, b1, w2, b2, y):
            z1 = x @ w1.T + b1
            h = torch.clamp(z1, min=0)
            y_hat = h @ w2.T + b2
            delta2 = 2 * (y_hat - y) / y_hat.numel()     # dL/dŷ       [N, O]
            dw2 = delta2.T @ h                           #             [O, H]
            db2 = delta2.sum(dim=0)                      #             [O]
            delta1 = (delta2 @ w2) * (z1 > 0)            # dL/dz1      [N, H]
            dw1 = delta1.T @ x                           #             [H, D]
            db1 = delta1.sum(dim=0)                      #             [H]
            return dw1, db1, dw2, db2
    """),
    args=("x", "w1", "b1", "w2", "b2", "y"), grads=("dw1", "db1", "dw2", "db2"), wrt=("w1", "b1", "w2", "b2"),
    shapes={"x": "N, D", "w1": "H, D", "b1": "H", "w2": "O, H", "b2": "O", "y": "N, O", "out": ""},
    meaning={"x": "the inputs", "w1": "layer1.weight", "b1": "layer1.bias", "w2": "layer2.weight",
             "b2": "layer2.bias", "y": "the targets"},
    cases=({"N": 5, "D": 10, "H": 20, "O": 1}, {"N": 4, "D": 3, "H": 6, "O": 2}, {"N": 8, "D": 5, "H": 5, "O": 3}),
    hints={"dw1": "δ1 = (δ2 @ w2) * (z1 > 0) is dL/dz1; dw1 = δ1.T @ x, of w1's shape [H, D]",
           "db1": "db1 = δ1.sum(dim=0), with δ1 = (δ2 @ w2) * (z1 > 0)",
           "dw2": "δ2 = dL/dŷ = 2(ŷ − y)/(N·O); dw2 = δ2.T @ h, of w2's shape [O, H]",
           "db2": "db2 = δ2.sum(dim=0), with δ2 = 2(ŷ − y)/(N·O)"},
    kinds={"w1": "weights:D", "w2": "weights:H"}, has_dout=False, mean_over="N, O",
))


# --------------------------------------------------------------------------- the learner's file

def _shape(e: Exercise, name: str) -> str:
    s = e.shapes[name]
    return f"[{s}]" if s else "a scalar"


def sizes_text(e: Exercise) -> str:
    """``(N, D, M) = (4, 3, 5), (6, 6, 6), (7, 2, 3)``: the three sizes the checker runs."""
    letters = list(e.cases[0])
    return f"({', '.join(letters)}) = " + ", ".join("(" + ", ".join(str(c[k]) for k in letters) + ")"
                                                    for c in e.cases)


def template(e: Exercise, file: str = "") -> str:
    """The file ``exercise start`` writes (as ``file``): the forward given, ``backward`` to fill in, every shape."""
    width = max(len(a) for a in (*e.args, *e.grads))
    arg_lines = "\n".join(f"    {a:<{width}}  {_shape(e, a):<10} {e.meaning[a]}" for a in e.args)
    grad_lines = "\n".join(f"    {g:<{width}}  {_shape(e, w):<10} dL/d{w}" for g, w in zip(e.grads, e.wrt))
    what = ("dout is the gradient of the loss with respect to forward's output; return the gradient of the "
            "loss with respect to each input below" if e.has_dout else
            "forward returns the loss itself (a scalar); return its gradient with respect to each input below")
    returns = ", ".join(e.grads) if len(e.grads) > 1 else e.grads[0]
    stub = "\n".join(f"    {g} = None  # {_shape(e, w)}" for g, w in zip(e.grads, e.wrt))
    checker = (f"The checker runs this file as you wrote it, in a separate process with a time limit, on three "
               f"sizes {sizes_text(e)}, and compares each gradient with PyTorch autograd's. Use torch operations; "
               "calling .backward() or torch.autograd yourself defeats the purpose. `backprop exercise check "
               "{FILE} --reveal` shows a reference answer.")
    head = f'''"""Exercise {e.name}: {e.title}.

Fill in `backward` below, then check it:

    backprop exercise check {{FILE}}

The forward (given):

{textwrap.indent(e.forward.rstrip(), "    ")}

backward({", ".join(e.args)}) receives torch tensors of dtype float64:

{arg_lines}

and returns {"(" + returns + ")" if len(e.grads) > 1 else returns}:

{grad_lines}

{textwrap.fill(what + ".", 100)}

{textwrap.fill(checker, 100)}
"""

import torch

EXERCISE = "{e.name}"  # which exercise this file is (exercise check reads it)


'''
    body = e.forward + f'''

def backward({", ".join(e.args)}):
    """Return {returns}: {"; ".join(f"{g} of shape {_shape(e, w)}" for g, w in zip(e.grads, e.wrt))}."""
{stub}
    return {returns}
'''
    return (head + body).replace("{FILE}", file or f"{e.name}.py")
