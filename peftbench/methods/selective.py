"""Selective layer tuning: chosen transformer blocks and the head train, every other weight is frozen.

Blocks are chosen by index (``layers``), or as the first ``first_k`` / last ``last_k`` blocks of
``model.layers_path``: the freeze-the-bottom baseline of Lee et al. 2019 ("What Would Elsa Do?
Freezing Layers During Transformer Fine-Tuning", arXiv:1911.03090). Embeddings, the pooler and
any final norm stay frozen; only the head (``model.head_modules``) trains besides the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods._common import transformer_layers
from peftbench.methods.base import METHODS, Method, MethodConfig, ModelContext, knob
from peftbench.methods.head_only import set_head_trainable


@dataclass
class SelectiveConfig(MethodConfig):
    """Exactly one of the three choices is set; the others stay null."""

    layers: list[int] | None = knob(
        None, help="block indices that train, 0-based (must lie in 0..num_layers-1)"
    )
    first_k: int | None = knob(None, help="or: the first k blocks (nearest the embeddings)", ge=1)
    last_k: int | None = knob(None, help="or: the last k blocks (nearest the head)", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [key for key in ("layers", "first_k", "last_k") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ConfigError(f"method: set exactly one of layers, first_k, last_k (got {given or 'none'})")
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("method.layers=[]: name at least one block index")
            self.layers = [int(i) for i in self.layers]


@METHODS.register
class SelectiveLayers(Method):
    Config = SelectiveConfig
    config: SelectiveConfig

    def chosen_layers(self, num_layers: int) -> list[int]:
        """Indices of the blocks that train, for a model with ``num_layers`` blocks."""
        layers, first_k, last_k = self.config.layers, self.config.first_k, self.config.last_k
        if layers is not None:
            bad = [i for i in layers if not 0 <= i < num_layers]
            if bad:
                raise ConfigError(
                    f"method.layers={layers}: index {bad[0]} out of range; this model has blocks "
                    f"0..{num_layers - 1}"
                )
            return sorted(set(layers))
        key, k = ("first_k", first_k) if first_k is not None else ("last_k", last_k)
        if k > num_layers:
            raise ConfigError(f"method.{key}={k}: this model has only {num_layers} blocks")
        return list(range(k)) if key == "first_k" else list(range(num_layers - k, num_layers))

    def validate(self, context: ModelContext) -> None:
        self.chosen_layers(context.num_layers)  # range checks before any weight loads

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        blocks = transformer_layers(model, context.layers_path)
        for index in self.chosen_layers(len(blocks)):
            blocks[index].requires_grad_(True)
        set_head_trainable(model, context.head_modules)
        return model
