"""LoRA-FA: LoRA whose A factors stay frozen at their random init, so only the B factors train (Zhang, Zhang, Shi,
Chu and Li 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language Models Fine-tuning",
arXiv:2308.03303). With A fixed, the backward pass no longer needs the layer's full-width input, only its r-wide
projection: the activation memory LoRA-FA saves. Half of LoRA's factor entries train (B: out x r per layer).

The model is any peft LoRA (``peft_config``, as for ``impl: peft_tuner``); ``apply`` freezes every ``lora_A``.
``gradient_correction`` (the later version of the paper, "LoRA-FA: Efficient and Effective Low Rank
Representation Fine-tuning", same arXiv id) trains B with peft's ``LoraFAOptimizer``, the authors' code: AdamW
on B's gradient projected as (r / alpha)^2 g_B (A A^T)^-1, the B update that best matches the full fine-tuning
gradient. It takes the run's lr, betas, eps and weight decay (``optimizer_class`` hook) and needs the frozen A
beside each B in its parameter groups (``parameter_groups`` hook), which is why this is a method of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, NO_DECAY_KEYWORDS, ModelContext, knob
from peftbench.methods.peft_tuner import PEFT_PREFIX, PeftTuner, PeftTunerConfig

A_FACTORS = ("lora_A", "lora_embedding_A")  # peft's names of LoRA's down-projection (A) factors


def is_a_factor(name: str) -> bool:
    return any(f".{key}." in f".{name}" for key in A_FACTORS)


@dataclass
class LoraFAConfig(PeftTunerConfig):
    gradient_correction: bool = knob(
        True,
        help="train B with peft's LoraFAOptimizer (projected B gradient, the authors' code); false: plain "
        "training of B with the run's optimizer (the 2023 paper's first version)",
    )


@METHODS.register
class LoraFA(PeftTuner):
    Config = LoraFAConfig
    config: LoraFAConfig

    def validate(self, context: ModelContext) -> None:
        if not isinstance(self.peft_config, LoraConfig):
            raise ConfigError(
                f"{PEFT_PREFIX}._target_={type(self.peft_config).__name__}: LoRA-FA freezes LoRA's A factors; "
                "allowed peft.LoraConfig"
            )
        if self.config.gradient_correction and self.peft_config.use_dora:
            raise ConfigError(
                f"{PEFT_PREFIX}.use_dora=True: LoraFAOptimizer pairs each A with its B only (DoRA adds a "
                "magnitude vector); allowed with method.gradient_correction=false"
            )
        if self.config.gradient_correction and self.config.optimizer_class:
            raise ConfigError(
                f"method.optimizer_class={self.config.optimizer_class}: gradient_correction trains with peft's "
                "LoraFAOptimizer; unset it or set method.gradient_correction=false"
            )
        super().validate(context)

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model = super().apply(model, context)
        for name, param in model.named_parameters():
            if is_a_factor(name):
                # Fixed at its init (Kaiming-uniform, peft's default); still saved beside B.
                param.requires_grad_(False)
        return model

    def optimizer_class(self) -> type[torch.optim.Optimizer] | None:
        if not self.config.gradient_correction:
            return super().optimizer_class()
        from peft.optimizers.lorafa import LoraFAOptimizer

        return LoraFAOptimizer

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Without the correction: the usual groups. With it: LoraFAOptimizer's groups, which name every
        parameter and carry each LoRA layer's scale; it pairs a frozen A with the B that follows it."""
        if not self.config.gradient_correction:
            return super().parameter_groups(model, weight_decay)
        scaling = {}  # each LoRA layer's alpha / r (or alpha / sqrt(r)), keyed by its A factor's name
        for module_name, module in model.named_modules():
            if isinstance(getattr(module, "scaling", None), dict):
                for adapter, scale in module.scaling.items():
                    scaling[f"{module_name}.lora_A.{adapter}.weight"] = scale
        groups: dict[bool, dict[str, list[Any]]] = {}
        last_scale = None
        for name, param in model.named_parameters():
            if not (param.requires_grad or is_a_factor(name)):
                continue
            if is_a_factor(name):
                last_scale = scaling.get(name)
            decay = not any(key in name for key in NO_DECAY_KEYWORDS)
            group = groups.setdefault(decay, {"params": [], "names": [], "scaling_factors": []})
            group["params"].append(param)
            group["names"].append(name)
            # A and its B carry the layer's scale (the optimizer reads it at B); other parameters None.
            group["scaling_factors"].append(last_scale if "lora_" in name else None)
        return [{**group, "weight_decay": weight_decay if decay else 0.0} for decay, group in groups.items()]
