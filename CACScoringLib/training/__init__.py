"""Model training: `train(load_config(path, overrides))`, as `cacscoring train CONFIG.yaml key=value ...` runs it."""

from .config import DEFAULTS, load_config, merge_config, parse_overrides
from .engine import TrainResult, train

__all__ = ["DEFAULTS", "TrainResult", "load_config", "merge_config", "parse_overrides", "train"]
