"""The bridge to Hugging Face peft: any peft tuner runs from YAML alone.

A method YAML names ``impl: peft_tuner`` and a ``peft_config`` with a ``_target_`` such as
``peft.LoraConfig``; Hydra instantiates it and this class injects it. The task head is added to
``modules_to_save`` so it trains and is saved with the adapter.
"""

from __future__ import annotations

import copy

import torch
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Method, ModelContext


@METHODS.register
class PeftTuner(Method):
    def __init__(self, name: str, peft_config: PeftConfig) -> None:
        super().__init__(name)
        if not isinstance(peft_config, PeftConfig):
            raise ConfigError(
                f"method.peft_config={peft_config!r}: expected a peft config (e.g. _target_: peft.LoraConfig)"
            )
        self.peft_config = peft_config

    def validate(self, context: ModelContext) -> None:
        task_type = getattr(self.peft_config.task_type, "value", self.peft_config.task_type)
        if task_type is not None and task_type != context.task_type:
            raise ConfigError(
                f"method.peft_config.task_type={task_type}: this task needs {context.task_type}"
            )

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        peft_config = copy.deepcopy(self.peft_config)
        if hasattr(peft_config, "modules_to_save") and context.head_modules:
            peft_config.modules_to_save = sorted(
                set(peft_config.modules_to_save or []) | set(context.head_modules)
            )
        return get_peft_model(model, peft_config)

    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in get_peft_model_state_dict(model).items()}
