"""L2-SP: an L2 penalty toward the pretrained weights instead of toward zero.

Li, Grandvalet and Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks" (ICML, arXiv:1802.01483):

    Omega(w) = alpha / 2 * ||w_S - w0_S||^2 + beta / 2 * ||w_new||^2

``w_S`` are the trainable weights that start from pretrained values ``w0_S`` (snapshotted when fit
starts, so the penalty is 0 at step 0 and its gradient is ``alpha * (w - w0)``); ``w_new`` are
weights without a pretrained value: the task head and every module a method created, which the
method flags with ``peftbench.methods._common.mark_added`` (bottleneck adapters, and everything peft
injects: LoRA factors, IA3 vectors, soft prompts, the copies peft trains in place of the originals).
The regularizer asks the model for those flags, never which method built it. It reaches the loop
through the ``extra_loss`` hook.

It combines with methods that train original weights (full, selective, bitfit, sparse, the layer
norms Houlsby adapters train, a peft tuner's biases under ``bias: all``). With a method that trains
no pretrained weight (LoRA, IA3 and the other peft tuners at their defaults) the ``alpha`` term
would be identically 0: the run would be the plain method under another label, so it is refused
with a ConfigError rather than recorded as a misleading "l2sp" result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods._common import added_parameter_names, in_modules
from peftbench.methods.base import knob
from peftbench.regularizers import REGULARIZERS, Regularizer, RegularizerConfig


@dataclass
class L2SPConfig(RegularizerConfig):
    alpha: float = knob(
        help="strength of the pull toward the pretrained weights (alpha / 2 * ||w - w0||^2)", ge=0
    )
    beta: float = knob(
        0.0, help="plain L2 on weights without a pretrained value (head, injected modules)", ge=0
    )
    head_modules: list[str] = knob(
        default_factory=list, help="the task head's modules: new weights, never anchored (model.head_modules)"
    )


@REGULARIZERS.register
class L2SP(Regularizer):
    Config = L2SPConfig
    config: L2SPConfig

    def __init__(self, name: str, config: L2SPConfig | None = None, **knobs: Any) -> None:
        super().__init__(name, config, **knobs)
        self.anchored: list[tuple[str, nn.Parameter, torch.Tensor]] | None = None  # (name, param, w0): setup
        self.new: list[tuple[str, nn.Parameter]] = []

    def setup(self, model: nn.Module) -> None:
        if self.anchored is not None:  # a second fit keeps the pretrained anchor, not the current weights
            return
        added = added_parameter_names(model)
        anchored, new = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name in added or in_modules(name, self.config.head_modules):
                new.append((name, param))
            else:
                anchored.append((name, param, param.detach().clone()))
        if not anchored:
            raise ConfigError(
                "regularizer=l2sp: this method trains no pretrained weight (only new modules and the head), "
                "so the penalty toward the pretrained weights would be 0; use regularizer=none"
            )
        self.anchored = anchored
        self.new = new

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if not self.anchored:
            return None
        if self.anchored[0][2].device != self.anchored[0][1].device:  # the model moved after setup (GPU)
            self.anchored = [(n, p, w0.to(p.device)) for n, p, w0 in self.anchored]
        penalty = sum((p - w0).square().sum() for _, p, w0 in self.anchored) * (self.config.alpha / 2)
        if self.config.beta and self.new:
            penalty = penalty + sum(p.square().sum() for _, p in self.new) * (self.config.beta / 2)
        return penalty
