"""What `train` is asked to do beside the config (its command-line outputs and switches), checked in one
place before any work. No torch here: the CLI checks them before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backprop_cli.errors import ConfigError


@dataclass
class TrainOptions:
    metrics: Optional[Path] = None
    save: Optional[Path] = None
    save_every: Optional[int] = None
    resume: Optional[Path] = None
    log_every: Optional[int] = None
    detect_anomaly: bool = False
    tensorboard: Optional[Path] = None
    plot: Optional[Path] = None  # the dashboard of the run (plots.dashboard), drawn at the end
    read_every: Optional[int] = None  # read the scalars back every N steps (default: engine.read_interval)
    threads: Optional[str] = None  # how many CPU threads torch uses and why (distributed.set_threads)
    save_best: Optional[Path] = None  # the checkpoint of the evaluation with the lowest val_loss

    def check(self, cfg) -> None:
        """Every problem of these options with this config at once (ConfigError, exit 2)."""
        problems = []
        if self.save_every is not None and self.save is None:
            problems.append("--save-every needs --save PATH (where to write the checkpoints)")
        if self.save_best is not None and getattr(cfg.data, "validation", None) is None:
            problems.append("--save-best needs validation data: set data.validation to a fraction (e.g. 0.2) "
                            "or a CSV file")
        if problems:
            raise ConfigError(problems)
