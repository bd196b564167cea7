"""``explain --config``: the body of the explain command when it is given a config (see cli/app.py)."""

from pathlib import Path
from typing import Optional


def explain_config(config: Path, set_: Optional[list[str]], batch: int, sample: int, wide: bool, format) -> None:
    from backprop_cli.cli.app import _emit, _load, _read_data, _single_process
    from backprop_cli.render.learner_documents import explain_net_document

    _single_process("explain")
    cfg = _load(config, set_, ["device=cpu"])
    table = _read_data(cfg)
    from backprop_cli.runs.explain_net import explain_config as work

    result = work(cfg, table, batch, sample)

    def render(console, plain):
        from backprop_cli.render.explain_net import render_explain_net

        render_explain_net(console, plain, result, wide=wide)

    _emit(format, explain_net_document(result), render)
