"""The method interface: everything a PEFT method may do to the one shared training loop.

A method transforms the model (freezes, unfreezes, injects modules) and may contribute, through
small hooks, optimizer parameter groups, an optimizer class, an extra loss term and Lightning
callbacks for per-step work. The LightningModule only calls these hooks; it never asks which
method it is running. Regularizers use the same hooks (they just never transform the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from torch import nn

from peftbench.errors import ConfigError  # noqa: F401  (re-exported for method modules)
from peftbench.registry import Registry

NO_DECAY_KEYWORDS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


@dataclass
class ModelContext:
    """What a method needs to know about the backbone it transforms."""

    architecture: str  # family name, e.g. "bert", "llama"
    head_modules: list[str]  # task head module names: always trainable, saved with the adapter
    layers_path: str  # dotted path of the transformer block list, e.g. "bert.encoder.layer"
    num_layers: int
    task_type: str  # peft TaskType name, e.g. "SEQ_CLS"
    extra: dict[str, Any] = field(default_factory=dict)


class TrainingHooks:
    """Hooks the LightningModule calls; the defaults do nothing."""

    def setup(self, model: nn.Module) -> None:
        """Called once the final model exists (after every transform), before the optimizer is built."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the task loss at every training step, or None."""
        return None

    def callbacks(self) -> list[Callback]:
        """Lightning callbacks for per-step work (rank reallocation, gradient masks, ...)."""
        return []


class Method(TrainingHooks):
    """Base class for every method; subclasses register with ``@METHODS.register``."""

    def __init__(self, name: str) -> None:
        self.name = name

    # --- before any model loads -------------------------------------------------------------
    def validate(self, context: ModelContext) -> None:
        """Raise ConfigError for a combination this method cannot serve."""

    # --- the transform ------------------------------------------------------------------------
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        raise NotImplementedError

    # --- optimizer ----------------------------------------------------------------------------
    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Trainable parameters split into decayed and non-decayed groups (biases and norms)."""
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if any(key in name for key in NO_DECAY_KEYWORDS) else decay).append(param)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def optimizer_class(self) -> type[torch.optim.Optimizer] | None:
        """An optimizer class this method requires (e.g. paged AdamW), or None for the configured one."""
        return None

    # --- accounting and export ------------------------------------------------------------------
    def trainable_parameter_count(self, model: nn.Module) -> int:
        """Entries the optimizer may change; methods that mask entries override this."""
        return sum(logical_numel(p) for p in model.parameters() if p.requires_grad)

    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights that differ from the pretrained model: what an adapter export holds."""
        return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    # --- export and inference (peftbench/export.py, peftbench/metrics/inference.py) -------------------
    def load_trainable_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put weights saved by trainable_state_dict back into a freshly built (and applied) model."""
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"saved weights that match nothing in the model: {unexpected[:5]}")

    def save_adapter(self, model: nn.Module, folder: Path) -> None:
        """Write the trained weights alone (what ``peftbench-export`` calls the adapter)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.contiguous().cpu() for k, v in self.trainable_state_dict(model).items()}
        save_file(weights, str(folder / "trainable.safetensors"))

    def merged_model(self, model: nn.Module) -> nn.Module | None:
        """The model with the method folded into plain base weights (may reuse ``model``), or None
        where that is impossible. Default: a model built only of transformers/torch modules (full,
        head-only, selective, BitFit, sparse) already is its merged form; injected modules are not."""
        plain = all(type(m).__module__.startswith(("transformers.", "torch.")) for m in model.modules())
        return model if plain else None

    def extra_input_tokens(self) -> int:
        """Tokens the method adds to every input at inference (soft prompts); 0 for weight-space methods."""
        return 0

    def extra_processed_tokens(self) -> int:
        """Of those, the tokens every layer processes like real ones (their FLOPs count in the budget).

        A soft prompt prepended to the embeddings runs through every layer; a prefix handed over as attention
        keys and values is only attended to, so it adds no matmul work per token. Defaults to every extra token.
        """
        return self.extra_input_tokens()


def logical_numel(param: torch.Tensor) -> int:
    """Parameter count of a tensor, counting quantised (packed) weights by their logical shape."""
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None and getattr(quant_state, "shape", None) is not None:
        return int(torch.Size(quant_state.shape).numel())
    return param.numel()


METHODS: Registry[Method] = Registry("method", "peftbench.methods")
