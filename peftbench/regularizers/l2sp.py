"""L2-SP: an L2 penalty toward the pretrained weights instead of toward zero.

Li, Grandvalet and Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks" (ICML, arXiv:1802.01483):

    Omega(w) = alpha / 2 * ||w_S - w0_S||^2 + beta / 2 * ||w_new||^2

``w_S`` are the trainable weights that start from pretrained values ``w0_S`` (snapshotted when fit
starts, so the penalty is 0 at step 0 and its gradient is ``alpha * (w - w0)``); ``w_new`` are
weights without a pretrained value: the task head and modules a method injected (flagged with
``peftbench.methods._common.mark_added``). It reaches the loop through the ``extra_loss`` hook.

It combines with methods that train original weights (full, selective, bitfit, sparse, and the
layer norms Houlsby adapters train). With a method that trains no pretrained weight (LoRA, IA3 and
every other peft tuner, which keep base weights frozen and train copies or new modules) the
``alpha`` term would be identically 0: the run would be the plain method under another label, so
it is refused with a ConfigError rather than recorded as a misleading "l2sp" result.
"""

from __future__ import annotations

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods._common import added_parameter_names, in_modules
from peftbench.methods.base import TrainingHooks


class L2SP(TrainingHooks):
    def __init__(self, alpha: float, beta: float = 0.0, head_modules: list[str] | None = None) -> None:
        for key, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"regularizer.{key}={value!r}: expected a number >= 0")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.head_modules = list(head_modules or [])
        self.anchored: list[tuple[str, nn.Parameter, torch.Tensor]] | None = None
        self.new: list[tuple[str, nn.Parameter]] = []

    def setup(self, model: nn.Module) -> None:
        if self.anchored is not None:  # a second fit keeps the pretrained anchor, not the current weights
            return
        try:  # peft keeps the base weights frozen by construction: nothing pretrained trains
            from peft import PeftModel

            is_peft = isinstance(model, PeftModel)
        except ImportError:  # pragma: no cover - peft is a hard dependency
            is_peft = False
        added = added_parameter_names(model)
        anchored, new = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if is_peft or name in added or in_modules(name, self.head_modules):
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
        penalty = sum((p - w0).square().sum() for _, p, w0 in self.anchored) * (self.alpha / 2)
        if self.beta and self.new:
            penalty = penalty + sum(p.square().sum() for _, p in self.new) * (self.beta / 2)
        return penalty
