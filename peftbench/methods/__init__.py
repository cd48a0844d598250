"""Methods: one module per method peft lacks, plus the bridge that runs any peft tuner from YAML."""

from peftbench.methods.base import (
    METHODS,
    ConfigError,
    Method,
    MethodConfig,
    ModelContext,
    TrainingHooks,
    knob,
)

__all__ = ["METHODS", "ConfigError", "Method", "MethodConfig", "ModelContext", "TrainingHooks", "knob"]
