"""The YAML config. No torch here.

- ``schema``: the pydantic models, one per section, and the component names derived from them
- ``yamlfile``: reading and parsing the file, with the line of every key
- ``overrides``: ``--set KEY.PATH=VALUE``
- ``messages``: pydantic's errors as ``FILE:LINE: key.path: message (got VALUE)``
- ``load``: file + overrides → Config (every problem at once)
- ``values``: what is derived from a config (steps, log interval, optimizer arguments and labels)
"""

from backprop_cli.config.load import load_config, load_text, parse_optimizer, validate
from backprop_cli.config.components import ACTIVATION_NAMES, LOSS_NAMES, OPTIMIZER_NAMES, SCHEDULER_NAMES, SGD, Adam, Task, is_classification, task_of
from backprop_cli.config.schema import DATA_KIND_NAMES, PRECISION_NAMES, Config, CsvData, ModelConfig, SyntheticData
from backprop_cli.config.values import (DEFAULT_STEPS, default_log_every, flops_per_step, optimizer_hyperparams,
                                        optimizer_label, optimizer_spec_text, resolved_steps, start_summary, to_yaml)
from backprop_cli.config.yamlfile import parse_value

__all__ = ["ACTIVATION_NAMES", "DATA_KIND_NAMES", "LOSS_NAMES", "OPTIMIZER_NAMES", "PRECISION_NAMES", "SCHEDULER_NAMES",
           "SGD", "Adam", "Config", "CsvData", "ModelConfig", "SyntheticData", "Task", "is_classification", "task_of", "DEFAULT_STEPS", "default_log_every",
           "flops_per_step", "load_config", "load_text", "optimizer_hyperparams", "optimizer_label",
           "optimizer_spec_text", "parse_optimizer", "parse_value", "resolved_steps", "start_summary", "to_yaml",
           "validate"]
