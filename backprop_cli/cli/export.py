"""`backprop export`: a trained model as ONNX (raw columns in, the answer out), torch.export or safetensors."""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from backprop_cli.cli.common import command, input_file, single_process
from backprop_cli.cli.options import TrainedOpt, examples
from backprop_cli.errors import shown

SUFFIXES = {".onnx": "onnx", ".pt2": "torch-export", ".safetensors": "safetensors"}
MIN_OPSET = 13  # runs/export.py's lowest: Softmax over one axis, Split with an input


class ExportFormat(str, Enum):
    onnx = "onnx"
    torch_export = "torch-export"
    safetensors = "safetensors"


def format_of(out: Path, given: Optional[ExportFormat]) -> str:
    """``--format``, else the suffix of ``--out``; a suffix naming none is one line, exit 2 (no torch yet)."""
    from backprop_cli.errors import ConfigError

    if given is not None:
        return given.value
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out}: the suffix names no format (got {out.suffix or 'none'!r}); use .onnx, .pt2 "
                          "or .safetensors, or give --format")
    return fmt


def check_opset(opset: int) -> None:
    """An opset the installed onnx cannot write is one line, exit 2, before torch is imported."""
    from backprop_cli.errors import ConfigError

    try:
        import onnx
        import onnx.defs
    except ImportError:
        raise ConfigError("--format onnx needs the onnx package: pip install 'backprop-cli[export]'") from None

    top = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= top:
        raise ConfigError(f"--opset: the installed onnx {onnx.__version__} writes opsets {MIN_OPSET} to {top} "
                          f"(got {opset})")


@command(epilog=examples("backprop train -c p.yaml --epochs 20 --save-best best.pt -q",
                         "backprop export --checkpoint best.pt --out model.onnx",
                         "backprop export --checkpoint best.pt --out model.safetensors",
                         "backprop export --checkpoint best.pt --out model.pt2"))
def export(
    checkpoint: TrainedOpt,
    out: Annotated[Path, typer.Option("--out", help="The file to write (atomically); its suffix .onnx, .pt2 or "
                                      ".safetensors names the format.", show_default=False)],
    format: Annotated[Optional[ExportFormat], typer.Option("--format", help="onnx (raw columns in, the answer "
                                                           "out), torch-export (the network on the encoded "
                                                           "matrix) or safetensors (the weights); default: from "
                                                           "the suffix of --out.")] = None,
    opset: Annotated[int, typer.Option("--opset", help="The ONNX opset to write (onnx only).")] = 17,
) -> None:
    """Write a trained model for other programs: ONNX with the whole preprocessing inside, torch.export, or
    safetensors with the columns, scaling and classes as JSON in its header. docs/export.md is the reference."""
    single_process("export")
    fmt = format_of(out, format)
    if fmt == "onnx":
        check_opset(opset)
    input_file(checkpoint, "--checkpoint")
    from backprop_cli.io.paths import check_outputs, check_writable

    check_writable(out, None, "model file")
    check_outputs({"--out": out}, {"--checkpoint": checkpoint})
    from backprop_cli.runs.export import export as work
    from backprop_cli.runs.prediction import load_trained

    what = work(load_trained(checkpoint), out, fmt, opset)
    typer.echo(shown(f"wrote {out} ({fmt}: {what})"), err=True)
