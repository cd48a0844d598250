"""CorDA on the peft bridge, with the size of its calibration pass as a knob (Yang et al. 2024, "CorDA:
Context-Oriented Decomposition Adaptation of Large Language Models for Task-Aware Parameter-Efficient
Fine-tuning", NeurIPS 2024, arXiv:2406.05223).

``peft_config`` is a LoraConfig with ``init_lora_weights: corda``; the bridge (``impl: peft_tuner``) runs peft's
``preprocess_corda`` on ``calibration_samples`` training rows before injecting (methods/_lora_inits.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.errors import ConfigError
from peftbench.methods import _lora_inits
from peftbench.methods.base import METHODS, ModelContext, knob
from peftbench.methods.peft_tuner import PEFT_PREFIX, PeftTuner, PeftTunerConfig


@dataclass
class CordaMethodConfig(PeftTunerConfig):
    calibration_samples: int = knob(
        _lora_inits.CORDA_SAMPLES,
        help="training rows run one at a time to build each target layer's input covariance",
        ge=1,
    )


@METHODS.register
class Corda(PeftTuner):
    Config = CordaMethodConfig
    config: CordaMethodConfig

    def validate(self, context: ModelContext) -> None:
        init = _lora_inits.init_name(self.peft_config)
        if init != "corda":
            raise ConfigError(
                f"{PEFT_PREFIX}.init_lora_weights={init}: method.impl=corda runs CorDA's calibration pass; "
                "allowed corda (other inits: method.impl=peft_tuner)"
            )
        super().validate(context)

    def calibration_samples(self) -> int:
        return self.config.calibration_samples
