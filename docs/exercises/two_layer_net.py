"""Exercise two_layer_net: the seed's net, 10 → 20 → 1 (linear, ReLU, linear, MSE): write its whole backward.

Fill in `backward` below, then check it:

    backprop exercise check docs/exercises/two_layer_net.py

The forward (given):

    def forward(x, w1, b1, w2, b2, y):
        z1 = x @ w1.T + b1
        h = torch.clamp(z1, min=0)
        y_hat = h @ w2.T + b2
        return ((y_hat - y) ** 2).mean()

backward(x, w1, b1, w2, b2, y) receives torch tensors of dtype float64:

    x    [N, D]     the inputs
    w1   [H, D]     layer1.weight
    b1   [H]        layer1.bias
    w2   [O, H]     layer2.weight
    b2   [O]        layer2.bias
    y    [N, O]     the targets

and returns (dw1, db1, dw2, db2):

    dw1  [H, D]     dL/dw1
    db1  [H]        dL/db1
    dw2  [O, H]     dL/dw2
    db2  [O]        dL/db2

forward returns the loss itself (a scalar); return its gradient with respect to each input below.

The checker runs this file as you wrote it, in a separate process with a time limit, on three sizes
(N, D, H, O) = (5, 10, 20, 1), (4, 3, 6, 2), (8, 5, 5, 3), and compares each gradient with PyTorch
autograd's. Use torch operations; calling .backward() or torch.autograd yourself defeats the
purpose. `backprop exercise check docs/exercises/two_layer_net.py --reveal` shows a reference answer.
"""

import torch

EXERCISE = "two_layer_net"  # which exercise this file is (exercise check reads it)


def forward(x, w1, b1, w2, b2, y):
    z1 = x @ w1.T + b1
    h = torch.clamp(z1, min=0)
    y_hat = h @ w2.T + b2
    return ((y_hat - y) ** 2).mean()


def backward(x, w1, b1, w2, b2, y):
    """Return dw1, db1, dw2, db2: dw1 of shape [H, D]; db1 of shape [H]; dw2 of shape [O, H]; db2 of shape [O]."""
    # forward again, keeping what the backward needs
    z1 = x @ w1.T + b1
    h = torch.clamp(z1, min=0)
    y_hat = h @ w2.T + b2
    n = y_hat.numel()                 # the mean is over N·O numbers
    dy_hat = 2 * (y_hat - y) / n      # dL/dŷ, [N, O]
    dw2 = dy_hat.T @ h                # [O, H]
    db2 = dy_hat.sum(dim=0)           # [O]
    dh = dy_hat @ w2                  # [N, H]
    dz1 = dh * (z1 > 0)               # ReLU passes it where z1 > 0
    dw1 = dz1.T @ x                   # [H, D]
    db1 = dz1.sum(dim=0)              # [H]
    return dw1, db1, dw2, db2
