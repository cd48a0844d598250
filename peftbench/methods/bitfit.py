"""BitFit: only the bias terms (every ``*.bias`` of the backbone) and the task head train.

Ben Zaken, Ravfogel and Goldberg 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models" (ACL 2022, arXiv:2106.10199). ``bias`` is PyTorch's own
parameter name in Linear, LayerNorm and Conv layers, so no per-architecture list is needed; models
built without biases (Llama-style decoders) are refused because BitFit would train the head only.
"""

from __future__ import annotations

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules
from peftbench.methods.base import METHODS, Method, ModelContext
from peftbench.methods.head_only import set_head_trainable


@METHODS.register
class BitFit(Method):
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        biases = [
            param
            for name, param in model.named_parameters()
            if name.rsplit(".", 1)[-1] == "bias" and not in_modules(name, context.head_modules)
        ]
        if not biases:
            raise ConfigError(
                f"method={self.name}: model architecture '{context.architecture}' has no bias parameters "
                "outside the head (e.g. Llama-style decoders); BitFit needs a model with biases"
            )
        for param in biases:
            param.requires_grad_(True)
        set_head_trainable(model, context.head_modules)
        return model
