"""AdaLoRA: peft's tuner plus the per-step call it asks for.

peft's AdaLoRA reallocates ranks only when the training loop calls ``update_and_allocate(step)``
after each optimizer step (gradients still present) and needs ``total_step`` up front. Both belong
to the loop, not the YAML, so a Lightning callback supplies them: the step count the trainer will
actually run (accumulation, fast_dev_run and limits included) and the call after every optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import peft
from lightning.pytorch import Callback
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, knob
from peftbench.methods.peft_tuner import PEFT_PREFIX, PeftTuner, PeftTunerConfig


class AdaLoraAllocation(Callback):
    """Sets AdaLoRA's schedule from the trainer's budget and calls update_and_allocate every optimizer step."""

    def __init__(self, tinit_ratio: float, tfinal_ratio: float) -> None:
        self.tinit_ratio = tinit_ratio
        self.tfinal_ratio = tfinal_ratio
        self.calls = 0  # how often the reallocation ran (tests and logs read it)
        self._last_step = -1

    @staticmethod
    def _tuner(model: nn.Module) -> Any:
        tuner = getattr(model, "base_model", None)
        if tuner is None or not hasattr(tuner, "update_and_allocate"):
            raise TypeError("AdaLoraAllocation needs a peft AdaLoRA model")
        return tuner

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tuner = self._tuner(pl_module.model)
        config = tuner.peft_config[tuner.trainable_adapter_name]
        total = max(int(trainer.estimated_stepping_batches), 1)
        config.total_step = total
        config.tinit = int(self.tinit_ratio * total)
        config.tfinal = int(self.tfinal_ratio * total)
        if config.tinit >= total - config.tfinal:  # tiny budgets (fast_dev_run): no warm-up/final phases
            config.tinit, config.tfinal = 0, 0
        tuner.rankallocator.set_total_step(total)  # the allocator reads the same config; be explicit
        self._last_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # After the optimizer step, before the next zero_grad (Lightning zeroes inside the next closure),
        # so the gradients the importance scores need are still there; skip accumulation micro-batches.
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        # peft counts steps from 0 (its examples call it with the index of the step just taken).
        self._tuner(pl_module.model).update_and_allocate(trainer.global_step - 1)
        self.calls += 1


@dataclass
class AdaLoraTunerConfig(PeftTunerConfig):
    """The peft bridge's knobs plus AdaLoRA's schedule, as shares of the steps the trainer will run."""

    tinit_ratio: float = knob(
        0.1, help="share of the optimizer steps before pruning starts (peft's tinit)", ge=0, lt=1
    )
    tfinal_ratio: float = knob(
        0.2, help="share of the steps at the end with the final ranks (peft's tfinal)", ge=0, lt=1
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.peft_config, peft.AdaLoraConfig):
            raise ConfigError(
                f"{PEFT_PREFIX}: expected peft.AdaLoraConfig, got {type(self.peft_config).__name__}"
            )
        init_r, target_r = self.peft_config.init_r, self.peft_config.target_r
        if (
            target_r > init_r
        ):  # pruning only lowers ranks: peft fails mid-training (a kthvalue error) otherwise
            raise ConfigError(
                f"{PEFT_PREFIX}.target_r={target_r}: must be <= {PEFT_PREFIX}.init_r ({init_r}); AdaLoRA prunes "
                "ranks from init_r down to an average of target_r"
            )
        if self.tinit_ratio + self.tfinal_ratio >= 1.0:
            raise ConfigError(
                f"method.tinit_ratio + method.tfinal_ratio = {self.tinit_ratio + self.tfinal_ratio}: must be < 1 "
                "(the budget phase needs steps)"
            )


@METHODS.register
class AdaLora(PeftTuner):
    Config = AdaLoraTunerConfig
    config: AdaLoraTunerConfig

    def __init__(self, name: str, config: AdaLoraTunerConfig | None = None, **knobs: Any) -> None:
        super().__init__(name, config, **knobs)
        self.allocation = AdaLoraAllocation(self.config.tinit_ratio, self.config.tfinal_ratio)

    def callbacks(self) -> list[Callback]:
        return [self.allocation]
