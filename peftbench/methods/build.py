"""Building a run's method, regularizers and the context methods see, from the composed config.

Every path that builds a run (training, export, init_from, the benches, the tests) gets its method here,
so a method's knobs are checked the same way everywhere, before any weights load.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Method, ModelContext, TrainingHooks
from peftbench.models.backbone import ModelConfig
from peftbench.tasks.config import TaskConfig

# Keys every method YAML may carry besides its implementation's own arguments.
METHOD_COMMON_KEYS = ("name", "impl", "lr", "lr_source", "paper")


def build_method(method_cfg: DictConfig) -> Method:
    """Instantiate the registered implementation named by ``method.impl`` with the YAML's other keys."""
    for key in ("name", "impl"):
        if not method_cfg.get(key):
            raise ConfigError(f"method.{key}: missing; every method YAML sets name and impl")
    cls = METHODS.get(method_cfg.impl)
    resolved = OmegaConf.to_container(method_cfg, resolve=True)
    arguments = {k: v for k, v in resolved.items() if k not in METHOD_COMMON_KEYS}
    try:
        arguments = instantiate(arguments, _convert_="all") if arguments else {}
    except InstantiationException as error:  # e.g. a peft config rejecting a knob: one line, not a traceback
        cause = error.__cause__ or error
        raise ConfigError(f"method ({method_cfg.name}): {' '.join(str(cause).split())}") from None
    try:
        return cls(name=method_cfg.name, **arguments)
    except TypeError as error:
        raise ConfigError(f"method ({method_cfg.impl}): {error}") from None


def build_regularizers(cfg: DictConfig) -> list[TrainingHooks]:
    regularizer = cfg.get("regularizer")
    if not regularizer or regularizer.get("_target_") is None:
        return []
    resolved = OmegaConf.to_container(regularizer, resolve=True)
    try:
        return [instantiate({k: v for k, v in resolved.items() if k != "name"}, _convert_="all")]
    except InstantiationException as error:  # surface the regularizer's own one-line ConfigError
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def model_context(model_cfg: ModelConfig, task: TaskConfig, hf_config: Any) -> ModelContext:
    """What methods see; the peft task type comes from the task (SEQ_CLS, or CAUSAL_LM for generation)."""
    generative = task.type == "generation"
    if generative and not model_cfg.causal_lm:
        raise ConfigError(
            f"task.type=generation: model {model_cfg.name} is not a decoder (model.causal_lm=false)"
        )
    return ModelContext(
        architecture=model_cfg.architecture,
        # A causal LM keeps its pretrained LM head: there is no new task head to train.
        head_modules=[] if generative else list(model_cfg.head_modules),
        layers_path=model_cfg.layers_path,
        num_layers=int(getattr(hf_config, "num_hidden_layers", 0)),
        task_type=task.peft_task_type,
        # For checks before weights load: the architecture (meta-device dry runs) and the length budget.
        extra={
            "hf_config": hf_config,
            "max_length": task.max_length,
            "max_positions": model_cfg.max_positions,
        },
    )
