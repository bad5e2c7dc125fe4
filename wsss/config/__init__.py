"""Typed configuration loaded from YAML (see :mod:`wsss.config.loader`)."""

from wsss.config.loader import apply_overrides, dump_yaml, from_dict, load_config, merge, read_yaml, to_dict
from wsss.config.schema import Config, DataConfig, RunConfig

__all__ = [
    "Config", "DataConfig", "RunConfig", "apply_overrides", "dump_yaml", "from_dict", "load_config",
    "merge", "read_yaml", "to_dict",
]
