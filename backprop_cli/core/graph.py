"""The autograd graph of one forward and backward, walked from ``loss.grad_fn`` (for ``backprop graph``).

Each operation node is a ``grad_fn`` (``AddmmBackward0``, ``ReluBackward0``, …); each leaf is the
``AccumulateGrad`` of a parameter, named by the parameter (``layer1.weight``). A node carries the shape
of what it computed, its values (all of them when there are at most :data:`TINY`, else a summary) and the
gradient of the loss with respect to them, as micrograd's ``draw_dot`` shows ``data`` and ``grad``; with
``saved``, the tensors and numbers each operation keeps for its backward (its ``_saved_*`` attributes).

Edges run from a node to the node it passes its gradient to, the way ``loss.backward()`` walks the graph:
from the loss down to the leaves. Nothing here prints.
"""

from __future__ import annotations

import torch

from backprop_cli.errors import BackpropError

TINY = 4  # tensors of at most this many elements show their values
MAX_GRAPH_NODES = 200  # about 40 layers of a layer1 … layerN net (5 nodes a layer)


def _number(v: float) -> str:
    return f"{v:.4g}"


def summary(t: torch.Tensor | None) -> str | None:
    """``0.5`` / ``[0.1, -0.2]`` for a tiny tensor, else ``mean 0.01, [-0.3, 0.4]`` (its mean and range)."""
    if t is None:
        return None
    t = t.detach().double().cpu()
    if t.numel() == 0:
        return "[]"
    if t.numel() <= TINY:
        flat = [_number(v) for v in t.reshape(-1).tolist()]
        return flat[0] if t.dim() == 0 else "[" + ", ".join(flat) + "]"
    return f"mean {_number(float(t.mean()))}, [{_number(float(t.min()))}, {_number(float(t.max()))}]"


def _saved_of(fn) -> list[dict]:
    """An operation's saved tensors and values (torchviz's way: its ``_saved_*`` attributes)."""
    out = []
    for attr in sorted(dir(fn)):
        if not attr.startswith("_saved_"):
            continue
        try:
            value = getattr(fn, attr)
        except RuntimeError:  # freed already
            continue
        name = attr[len("_saved_"):]
        if name.endswith(("_sym_sizes", "_sym_strides", "_sizes", "_strides")):
            continue  # layout bookkeeping, not a value the backward computes with
        if isinstance(value, torch.Tensor):
            out.append({"name": name, "shape": list(value.shape), "value": summary(value)})
        elif isinstance(value, (int, float, bool)) or value is None:
            out.append({"name": name, "shape": None, "value": repr(value)})
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value):
            out.append({"name": name, "shape": None, "value": repr(tuple(value))})
    return out


def trace(loss: torch.Tensor, params: dict[str, torch.Tensor], named: dict[str, torch.Tensor],
          saved: bool = False, max_nodes: int = MAX_GRAPH_NODES) -> dict:
    """Walk the graph of ``loss`` (before its backward), run ``loss.backward()``, and describe every node.

    ``params``: the leaves by name; ``named``: intermediate tensors by the name a learner knows them by
    (``z1``, ``h1``, ``ŷ``): an operation that made one of them shows its name and values.
    Returns ``{"nodes": [...], "edges": [[from, to], ...], "depth"}`` (plain data).
    """
    if loss.grad_fn is None:
        raise BackpropError("the loss has no grad_fn: nothing in it requires a gradient")
    by_param = {id(p): n for n, p in params.items()}
    by_fn = {}
    for label, t in named.items():
        if t.grad_fn is not None:
            t.retain_grad()
            by_fn[id(t.grad_fn)] = (label, t)
    order, ids, edges = [], {}, []
    stack = [loss.grad_fn]
    ids[id(loss.grad_fn)] = 0
    order.append(loss.grad_fn)
    while stack:
        fn = stack.pop(0)
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue
            if id(nxt) not in ids:
                ids[id(nxt)] = len(order)
                order.append(nxt)
                stack.append(nxt)
                if len(order) > max_nodes:
                    raise BackpropError(f"the graph has more than {max_nodes} nodes, more than graph draws (about "
                                        f"{max_nodes // 5} layers); use fewer layers (model.hidden_sizes) or "
                                        "inspect-grads for the gradients of a large net")
            edges.append([ids[id(fn)], ids[id(nxt)]])
    grads_out: dict[int, torch.Tensor] = {}

    def keep(fn):
        def hook(grad_inputs, grad_outputs):
            if grad_outputs and grad_outputs[0] is not None:
                grads_out[id(fn)] = grad_outputs[0].detach().clone()
        return hook

    handles, saved_by = [], {}
    for fn in order:
        if saved:
            saved_by[id(fn)] = _saved_of(fn)
        if type(fn).__name__ != "AccumulateGrad":
            handles.append(fn.register_hook(keep(fn)))
    try:
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    nodes = []
    for i, fn in enumerate(order):
        kind = type(fn).__name__
        node = {"id": i, "op": kind, "kind": "op", "name": kind, "label": None, "shape": None, "value": None,
                "grad": None, "saved": saved_by.get(id(fn), []) if saved else None}
        if kind == "AccumulateGrad":
            var = fn.variable
            node.update(kind="leaf", name=by_param.get(id(var), "leaf"), shape=list(var.shape),
                        value=summary(var), grad=summary(var.grad))
        else:
            if id(fn) in by_fn:
                label, t = by_fn[id(fn)]
                node.update(label=label, shape=list(t.shape), value=summary(t), grad=summary(t.grad))
            elif id(fn) in grads_out:
                g = grads_out[id(fn)]
                node.update(shape=list(g.shape), grad=summary(g))
            if i == 0:
                node["kind"] = "loss"
        nodes.append(node)
    depth = _levels(len(nodes), edges)
    for node, level in zip(nodes, depth):
        node["level"] = level
    return {"nodes": nodes, "edges": edges, "depth": max(depth) + 1 if depth else 0}


def _levels(count: int, edges: list[list[int]]) -> list[int]:
    """Each node's longest distance from the loss (node 0): the row a layered drawing puts it in."""
    level = [0] * count
    children: dict[int, list[int]] = {}
    indegree = [0] * count
    for a, b in edges:
        children.setdefault(a, []).append(b)
        indegree[b] += 1
    ready = [i for i in range(count) if indegree[i] == 0]
    while ready:
        a = ready.pop(0)
        for b in children.get(a, []):
            level[b] = max(level[b], level[a] + 1)
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    return level


# --------------------------------------------------------------------------- the two graphs graph draws


def example_graph(x: float = 2.0, y: float = 1.0, w1: float = 0.5, w2: float = 0.3, saved: bool = False) -> dict:
    """The two-weight scalar example of ``explain``: z1 = w1·x, ŷ = w2·z1, L = ½(y − ŷ)²."""
    t1 = torch.tensor(w1, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor(w2, dtype=torch.float64, requires_grad=True)
    z1 = t1 * x
    y_hat = t2 * z1
    r = y - y_hat
    sq = r ** 2
    loss = 0.5 * sq
    g = trace(loss, {"w1": t1, "w2": t2}, {"z1": z1, "ŷ": y_hat, "y − ŷ": r, "(y − ŷ)²": sq, "L": loss}, saved)
    g["title"] = f"explain's example: x = {x:g}, y = {y:g}, L = ½(y − w2·w1·x)²"
    return g


def network_graph(run, batch: int = 0, saved: bool = False) -> dict:
    """One forward and backward of the configured net (its seeded init) on batch ``batch``, each layer's
    output named as ``explain --config`` names it (z_k, h_k, ŷ; in a block with a norm, dropout or skip
    also u_k, a_k and d_k). Training mode, as explain: batch norm with the batch's statistics, dropout
    with the fixed keep-mask of (seed, batch) (:func:`backprop_cli.core.model.dropout_masks`); the same
    steps as the net's own forward with those masks."""
    from backprop_cli.core.components import DROPOUT, RESIDUAL
    from backprop_cli.core.model import dropout_masks

    model = run.model
    x, y = run.batches(batch)
    model.train()
    masks = dropout_masks(model, x.shape[0], run.cfg.seed, batch)
    named: dict[str, torch.Tensor] = {}
    h = model.encoder(x) if getattr(model, "encoder", None) is not None else x
    for b in model.blocks:
        k = b.k
        z = b.layer(h)
        named[f"z{k}"] = z
        if b.norm is not None:
            z = b.norm(z)
            named[f"u{k}"] = z
        a = model.activation(z)
        keep = k in masks
        named[f"a{k}" if keep or b.residual else f"h{k}"] = a
        if keep:
            a = DROPOUT.forward(a, masks[k].to(a.device), b.dropout)
            named[f"d{k}" if b.residual else f"h{k}"] = a
        h = RESIDUAL.forward(h, a) if b.residual else a
        if b.residual:
            named[f"h{k}"] = h
    z = model.layers[-1](h)
    named[f"ŷ = z{len(model.layers)}"] = z
    loss = run.loss_fn(z, y)
    named["L"] = loss
    for p in model.parameters():
        p.grad = None
    g = trace(loss, dict(model.named_parameters()), named, saved)
    widths = " → ".join(str(w) for w in run.cfg.model.widths)
    g["title"] = f"{widths} net, batch {batch} ({x.shape[0]} rows): L = {type(run.loss_fn).__name__}(ŷ, y)"
    return g
