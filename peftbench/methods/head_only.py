"""Head-only tuning (linear probe): the backbone is frozen, only the task head learns.

Which representation the head reads is the model's own: for BERT-style encoders the pooled
[CLS] output (pooler dense + tanh, itself frozen), for decoders the last non-pad token.
"""

from __future__ import annotations

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Method, ModelContext


def set_head_trainable(model: nn.Module, head_modules: list[str]) -> None:
    """Unfreeze the named head modules; fails loudly when a name matches nothing."""
    found = set()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if name in head_modules or leaf in head_modules:
            module.requires_grad_(True)
            found.add(name if name in head_modules else leaf)
    missing = [name for name in head_modules if name not in found]
    if missing:
        raise ConfigError(f"model.head_modules={head_modules}: {missing} match no module of the model")


@METHODS.register
class HeadOnly(Method):
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        set_head_trainable(model, context.head_modules)
        return model
