"""Exercise linear: a fully connected layer: out = x @ w.T + b; write (dx, dw, db).

Fill in `backward` below, then check it:

    backprop exercise check docs/exercises/linear_transposed.py

The forward (given):

    def forward(x, w, b):
        return x @ w.T + b

backward(x, w, b, dout) receives torch tensors of dtype float64:

    x     [N, D]     the inputs, one row per sample
    w     [M, D]     the weights, one row per output unit
    b     [M]        the biases
    dout  [N, M]     dL/d(out), the gradient arriving from the layer above

and returns (dx, dw, db):

    dx    [N, D]     dL/dx
    dw    [M, D]     dL/dw
    db    [M]        dL/db

dout is the gradient of the loss with respect to forward's output; return the gradient of the loss
with respect to each input below.

The checker runs this file as you wrote it, in a separate process with a time limit, on three sizes
(N, D, M) = (4, 3, 5), (6, 6, 6), (7, 2, 3), and compares each gradient with PyTorch autograd's. Use
torch operations; calling .backward() or torch.autograd yourself defeats the purpose. `backprop
exercise check docs/exercises/linear_transposed.py --reveal` shows a reference answer.
"""

import torch

EXERCISE = "linear"  # which exercise this file is (exercise check reads it)


def forward(x, w, b):
    return x @ w.T + b


def backward(x, w, b, dout):
    """Return dx, dw, db: dx of shape [N, D]; dw of shape [M, D]; db of shape [M]."""
    dx = dout @ w
    dw = x.T @ dout  # a first try
    db = dout.sum(dim=0)
    return dx, dw, db
