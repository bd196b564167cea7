"""The ``--format json`` documents of explain --config and graph (the learner's commands). No torch here."""

from __future__ import annotations

from backprop_cli.render.documents import finite

LAYER_KEYS = ("name", "kind", "shape", "h_prev", "z", "h", "delta", "grad_weight", "grad_bias", "autograd_weight",
              "autograd_bias", "autograd_delta", "max_abs_diff")
# a hidden block's further parts: its activation output, the gradients arriving at h_k and a_k, the skip,
# and its norm ({"name", "kind", "over", "eps", "mean", "var", "xhat", "u", "weight", "bias", "delta_u",
# "grad_weight", "grad_bias", "autograd_weight", "autograd_bias", "max_abs_diff"} or null) and dropout
# ({"p", "mode": "fixed_mask", "keep", "d"} or null)
HIDDEN_KEYS = ("a", "delta_h", "delta_a", "residual", "norm", "dropout")


def explain_net_document(r: dict) -> dict:
    """``explain --config --format json``: ``{"loss", "order": "output_to_input", "batch", "sample", "rows",
    "activation", "loss_name", "y_hat", "dL_dy_hat", "layers": [...]}``; ``layers`` from the output layer
    (``layerN``) down to ``layer1``, the order of the backward pass; arrays as nested lists shaped like
    their tensors (``grad_weight`` is [out][in]); ``grad_bias``/``autograd_bias`` are null without biases.
    ``kind`` is ``output`` or ``hidden``; hidden layers carry :data:`HIDDEN_KEYS` too."""
    return finite({"loss": r["loss"], "order": "output_to_input", "batch": r["batch"], "sample": r["sample"],
                   "rows": r["rows"], "activation": r["activation_name"], "loss_name": r["loss_name"],
                   "norm": r["norm"], "mode": "train", "dtype": "float64", "y_hat": r["y_hat"],
                   "dL_dy_hat": r["dL_dy_hat"],
                   "layers": [{k: layer[k] for k in LAYER_KEYS + (HIDDEN_KEYS if layer["kind"] == "hidden" else ())}
                              for layer in r["layers"]]})


def graph_document(g: dict) -> dict:
    """``graph --format json``: ``{"nodes": [{"id", "kind", "name", "label", "shape", "value", "grad",
    "saved"}], "edges": [[from, to], ...]}``; an edge runs from a node to the node it passes gradients to."""
    return finite({"nodes": g["nodes"], "edges": g["edges"]})
