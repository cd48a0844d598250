"""LoRA+: LoRA whose B factors learn ``lr_ratio`` times faster than everything else (Hayou, Ghosh and Yu 2024,
"LoRA+: Efficient Low Rank Adaptation of Large Models", ICML 2024, arXiv:2402.12354).

The model is any peft LoRA (``peft_config``, as for ``impl: peft_tuner``); only the optimizer's parameter groups
differ. peft's ``create_loraplus_optimizer`` groups the same way (``lora_B`` at lr x ratio, the rest at lr) but
builds the optimizer itself and also moves every 1-D trainable tensor (the head's bias, norms) to the B rate
and sets one weight decay for all; here the groups come through the ``parameter_groups`` hook, so the run's own
optimizer, weight-decay split (none for biases and norms) and schedule apply, and only the B factors
(``lora_B``, ``lora_embedding_B``) get the larger rate: the head and everything else keep the configured lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft import LoraConfig
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import LR_SCALE, METHODS, NO_DECAY_KEYWORDS, ModelContext, knob
from peftbench.methods.peft_tuner import PEFT_PREFIX, PeftTuner, PeftTunerConfig

B_FACTORS = ("lora_B", "lora_embedding_B")  # peft's names of LoRA's up-projection (B) factors


def is_b_factor(name: str) -> bool:
    return any(f".{key}." in f".{name}" for key in B_FACTORS)


@dataclass
class LoraPlusConfig(PeftTunerConfig):
    lr_ratio: float = knob(
        16.0, help="lr of the B factors / lr of the rest (eta_B / eta_A); the paper recommends 2^4 = 16", ge=1
    )


@METHODS.register
class LoraPlus(PeftTuner):
    Config = LoraPlusConfig
    config: LoraPlusConfig

    def validate(self, context: ModelContext) -> None:
        if not isinstance(self.peft_config, LoraConfig):
            raise ConfigError(
                f"{PEFT_PREFIX}._target_={type(self.peft_config).__name__}: LoRA+ scales the lr of LoRA's B "
                "factors; allowed peft.LoraConfig"
            )
        super().validate(context)

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Decayed and non-decayed groups as usual, each split once more: B factors at ``lr_ratio`` x lr."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            decay = not any(key in name for key in NO_DECAY_KEYWORDS)
            groups.setdefault((decay, is_b_factor(name)), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": weight_decay if decay else 0.0,
                **({LR_SCALE: self.config.lr_ratio} if b_factor else {}),
            }
            for (decay, b_factor), params in sorted(groups.items(), reverse=True)
        ]
