"""`backprop export`: a trained model in a format other programs load. Nothing here prints.

* ``safetensors``: the weights under the checkpoint's names and the model's data section as JSON in the
  header (io/safetensors_file.py); evaluate, predict and :func:`backprop_cli.load` take it as a checkpoint.
* ``onnx``: one graph from the raw columns to the answer: every feature column an input named as the column
  (numbers float32 [N, 1], NaN for an empty cell; categories and binary columns string [N, 1]), the
  encoding (fill values, missing indicators, one-hot through ``ai.onnx.ml`` LabelEncoder and OneHotEncoder,
  embedding indices), the scaling, the network, then regression values in the target's units (one output per
  target column, float64 [N, 1]) or ``label`` and ``probabilities``.
* ``torch-export`` (``.pt2``): ``torch.export`` of the network in eval mode, batch dimension dynamic, taking
  the encoded and scaled float32 matrix; the same JSON in the archive's extra file ``backprop.json``.

The file is written atomically and only after the checkpoint passed every check (runs.prediction.load_trained).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from backprop_cli.config import task_of
from backprop_cli.data.encoding import MISSING_CATEGORY
from backprop_cli.data.readers import MISSING_TOKENS
from backprop_cli.errors import ConfigError
from backprop_cli.io.atomic import write_atomic
from backprop_cli.io.safetensors_file import MAGIC, metadata, save_safetensors
from backprop_cli.runs.prediction import Trained

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis, Split with an input
ML_OPSET = 2  # ai.onnx.ml: LabelEncoder string → string/int64/float
EXTRA_FILE = "backprop.json"  # the .pt2 archive's metadata member
UNSEEN = "\x00<unseen>"  # what a category value the training rows never had maps to inside the graph


def max_opset() -> int:
    """The highest opset both the installed onnx and torch's ONNX exporter write."""
    import onnx.defs
    from torch.onnx import _constants

    return min(onnx.defs.onnx_opset_version(), _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)


def check_opset(opset: int) -> None:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ConfigError(f"--opset: the installed onnx and torch's exporter write opsets {MIN_OPSET} to {top} "
                          f"(got {opset})")


def export(trained: Trained, out: Path, fmt: str, opset: int = DEFAULT_OPSET) -> str:
    """Write ``trained`` to ``out`` in ``fmt``; returns what was written, in words."""
    if fmt == "onnx":
        check_opset(opset)
    meta = metadata(trained.saved, task_of(trained.loss_name))
    if fmt == "safetensors":
        tensors = trained.model.state_dict()
        save_safetensors(out, tensors, meta)
        return f"{len(tensors)} tensors ({', '.join(list(tensors)[:4])}{', …' if len(tensors) > 4 else ''})"
    if fmt == "onnx":
        model = onnx_model(trained, opset, meta[MAGIC])
        blob = model.SerializeToString()
        write_atomic(out, lambda f: f.write(blob), "wb")
        ins = ", ".join(i.name for i in model.graph.input)
        return f"inputs {ins}; outputs {', '.join(o.name for o in model.graph.output)}; opset {opset}"
    program = exported_program(trained)
    buf = io.BytesIO()  # torch.export.save takes a path or a buffer (it warns on any other file object)
    torch.export.save(program, buf, extra_files={EXTRA_FILE: meta[MAGIC]})
    write_atomic(out, lambda f: f.write(buf.getvalue()), "wb")
    return f"input x float32 [N, {trained.encoding.width}] (encoded and scaled), metadata in {EXTRA_FILE}"


# ------------------------------------------------------------------ torch.export


def exported_program(trained: Trained):
    width = trained.encoding.width
    example = torch.zeros(2, width)
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(trained.model.eval(), (example,), dynamic_shapes=({0: batch},))


# ------------------------------------------------------------------ ONNX


def network_onnx(trained: Trained, opset: int):
    """torch.onnx.export of the eval-mode network (input ``x`` [N, width], output ``y``), dynamic batch.

    The TorchScript-based exporter: torch 2.13's default (``dynamo=True``) needs the onnxscript package,
    which this exporter does not; its deprecation warning is silenced here."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trained.model.eval(), (torch.zeros(2, trained.encoding.width),), buf, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          opset_version=opset)
    return onnx.load_from_string(buf.getvalue())


class _Graph:
    """Nodes, constants and inputs of the graph being built; every internal name under ``bp/``."""

    def __init__(self):
        self.nodes, self.inits, self.inputs, self.n = [], [], [], 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"bp/{hint}_{self.n}"

    def const(self, hint: str, values, dtype) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], hint: str, domain: str = "", outputs: Optional[list[str]] = None,
           **attrs) -> str:
        from onnx import helper

        outs = outputs or [self.name(hint)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), domain=domain, **attrs))
        return outs[0]


def _column(g: _Graph, c) -> list[str]:
    """The inputs one column gives the network, as ``predict`` encodes them (data.encoding.ColumnCode)."""
    from onnx import TensorProto, helper

    ml = "ai.onnx.ml"
    if c.type == "number":
        g.inputs.append(helper.make_tensor_value_info(c.name, TensorProto.FLOAT, ["N", 1]))
        gone = g.op("IsNaN", [c.name], "isnan")
        v = c.name
        if c.missing in ("mean", "median", "most_frequent", "constant"):
            v = g.op("Where", [gone, g.const("fill", [[c.fill]], np.float32), c.name], "filled")
        return [v] + ([g.op("Cast", [gone], "indicator", to=TensorProto.FLOAT)] if c.indicator else [])
    g.inputs.append(helper.make_tensor_value_info(c.name, TensorProto.STRING, ["N", 1]))
    tokens = [t for t in MISSING_TOKENS if t not in c.levels]
    fill = {"category": MISSING_CATEGORY, "most_frequent": c.fill, "constant": c.fill}.get(c.missing)
    fill = fill if fill in c.levels else None  # error / drop_rows: predict refuses the row; here it is unseen
    if c.type == "binary":
        one = [float(i == 1) for i in range(len(c.levels))]
        values = one + [one[c.levels.index(fill)] if fill is not None else float("nan")] * len(tokens)
        out = [g.op("LabelEncoder", [c.name], "binary", domain=ml, keys_strings=[*c.levels, *tokens],
                    values_floats=values, default_float=float("nan"))]  # a third value: NaN, as predict refuses it
    elif c.encoding == "embedding":
        index = list(range(1, len(c.levels) + 1))
        values = index + [c.levels.index(fill) + 1 if fill is not None else 0] * len(tokens)
        idx = g.op("LabelEncoder", [c.name], "index", domain=ml, keys_strings=[*c.levels, *tokens],
                   values_int64s=values, default_int64=0)  # 0: the <unknown> row
        out = [g.op("Cast", [idx], "index_f", to=TensorProto.FLOAT)]
    else:
        mapped = g.op("LabelEncoder", [c.name], "level", domain=ml, keys_strings=[*c.levels, *tokens],
                      values_strings=[*c.levels, *[fill if fill is not None else UNSEEN] * len(tokens)],
                      default_string=UNSEEN)
        hot = g.op("OneHotEncoder", [mapped], "onehot3", domain=ml, cats_strings=list(c.levels), zeros=1)
        shape = g.const("shape", [-1, len(c.levels)], np.int64)
        out = [g.op("Cast", [g.op("Reshape", [hot, shape], "onehot_d")], "onehot", to=TensorProto.FLOAT)]
    if c.indicator:
        gone = g.op("LabelEncoder", [c.name], "gone", domain=ml, keys_strings=list(MISSING_TOKENS),
                    values_floats=[1.0] * len(MISSING_TOKENS), default_float=0.0)
        out.append(gone)
    return out


def onnx_model(trained: Trained, opset: int, meta_json: str):
    """The whole model from raw columns to the user's answer, checked by onnx.checker."""
    import onnx
    from onnx import TensorProto, compose, helper

    g = _Graph()
    pieces = [p for c in trained.encoding.columns for p in _column(g, c)]
    x = g.op("Concat", pieces, "encoded", axis=1) if len(pieces) > 1 else pieces[0]
    if trained.x_scaling is not None:
        x = g.op("Sub", [x, g.const("mean", [trained.x_scaling.mean], np.float32)], "centred")
        x = g.op("Div", [x, g.const("std", [trained.x_scaling.std], np.float32)], "scaled")
    net = compose.add_prefix(network_onnx(trained, opset), "net/")
    g.op("Identity", [x], "x", outputs=["net/x"])
    g.nodes += list(net.graph.node)
    g.inits += list(net.graph.initializer)
    y, task, outputs = "net/y", task_of(trained.loss_name), []
    if task == "classes":
        k = len(trained.classes)
        g.op("Softmax", [y], "p", outputs=["probabilities"], axis=1)
        best = g.op("ArgMax", ["probabilities"], "best", axis=1, keepdims=0)
        g.op("LabelEncoder", [best], "label", domain="ai.onnx.ml", outputs=["label"], keys_int64s=list(range(k)),
             values_strings=list(trained.classes), default_string="")
        outputs = [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])]
    elif task == "binary":
        t = len(trained.targets)
        g.op("Sigmoid", [y], "p", outputs=["probabilities"])
        above = g.op("Greater", ["probabilities", g.const("half", 0.5, np.float32)], "above")
        g.op("Cast", [above], "label", outputs=["label"], to=TensorProto.INT64)
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N", t]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", t])]
    else:
        v = g.op("Cast", [y], "y64", to=TensorProto.DOUBLE)
        if trained.y_scaling is not None:
            v = g.op("Mul", [v, g.const("ystd", [trained.y_scaling.std], np.float64)], "ymul")
            v = g.op("Add", [v, g.const("ymean", [trained.y_scaling.mean], np.float64)], "yadd")
        names = list(trained.targets)
        if len(names) == 1:
            g.op("Identity", [v], "out", outputs=names)
        else:
            g.op("Split", [v, g.const("split", [1] * len(names), np.int64)], "split", outputs=names, axis=1)
        outputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, ["N", 1]) for n in names]
    graph = helper.make_graph(g.nodes, "backprop", g.inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, producer_name="backprop", ir_version=net.ir_version,
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml",
                                                                                                   ML_OPSET)])
    helper.set_model_props(model, {MAGIC: meta_json})
    onnx.checker.check_model(model, full_check=True)
    return model

