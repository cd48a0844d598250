"""Full fine-tuning: every weight of the backbone and the head is trained (the reference point)."""

from __future__ import annotations

from torch import nn

from peftbench.methods.base import METHODS, Method, ModelContext


@METHODS.register
class FullFineTuning(Method):
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(True)
        return model
