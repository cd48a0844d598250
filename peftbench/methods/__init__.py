"""Methods: one module per method peft lacks, plus the bridge that runs any peft tuner from YAML."""

from peftbench.methods.base import METHODS, ConfigError, Method, ModelContext, TrainingHooks

__all__ = ["METHODS", "ConfigError", "Method", "ModelContext", "TrainingHooks"]
