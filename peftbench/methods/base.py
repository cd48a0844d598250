"""The method interface: everything a PEFT method may do to the one shared training loop.

A method transforms the model (freezes, unfreezes, injects modules) and may contribute, through
small hooks, optimizer parameter groups, an optimizer class, an extra loss term and Lightning
callbacks for per-step work. The LightningModule only calls these hooks; it never asks which
method it is running. Regularizers use the same hooks (they just never transform the model).

A method's knobs are a dataclass (its ``Config``), as peft's tuners have: each field carries its
help string and the rules one generic check applies (``knob(..., gt=0)``), so a bad value stops
with one line, ``method.<key>=<value>: <what is allowed>``, before any weights load. Unknown keys
and wrong types are ``peftbench.config.dataclass_from_cfg``'s part of the same check.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import Callback
from torch import nn

from peftbench.errors import ConfigError  # noqa: F401  (re-exported for method modules)
from peftbench.knobs import (  # noqa: F401  (the typed-knob toolkit, re-exported for method modules)
    BOUNDS,
    Knobs,
    check_value,
    describe_bounds,
    integer_annotation,
    knob,
)
from peftbench.registry import Registry

if TYPE_CHECKING:
    from transformers import PretrainedConfig

NO_DECAY_KEYWORDS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")
# A parameter group may carry this key: its learning rate is the configured one times the value (LoRA+ gives the
# B factors a larger lr). The module applies it once the optimizer exists, so it works with any optimizer class.
LR_SCALE = "lr_scale"


@dataclass
class MethodConfig(Knobs):
    """A method's knobs: the keys of its YAML other than ``name``, ``impl`` and ``meta``. No fields: no knobs."""

    PREFIX: ClassVar[str] = "method"


class Configurable:
    """A component built from its label and its typed knobs: ``Cls(name, Cls.Config(...))``.

    Python callers may pass the knobs as keywords instead (``Cls(name, density=0.1)``); the rules run either
    way. ``peftbench.methods.build`` builds the config from YAML with unknown-key and type checks first.
    """

    Config: ClassVar[type[Knobs]] = Knobs

    def __init__(self, name: str, config: Knobs | None = None, **knobs: Any) -> None:
        if config is None:
            config = self.Config(**knobs)
        elif knobs:
            raise TypeError(f"{type(self).__name__}: pass a {self.Config.__name__} or knobs, not both")
        elif not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.name = name
        self.config = config


# --- what a method sees of the backbone -------------------------------------------------------------------
@dataclass
class ModelContext:
    """What a method needs to know about the backbone it transforms (built by ``build.model_context``)."""

    architecture: str  # family name, e.g. "bert", "llama"
    head_modules: list[str]  # task head module names: always trainable, saved with the adapter
    layers_path: str  # dotted path of the transformer block list, e.g. "bert.encoder.layer"
    num_layers: int
    task_type: str  # peft TaskType name, e.g. "SEQ_CLS"
    # For checks before any weights load:
    hf_config: PretrainedConfig | None = None  # the architecture (meta-device dry runs of an injection)
    max_length: int | None = None  # task.max_length: the longest input the task feeds the model
    max_positions: int | None = None  # model.max_positions: the longest the position embeddings allow
    auto_model_class: type | None = None  # the task kind's transformers Auto class (the dry runs build it)
    # For inits that need a pass over data (EVA, CorDA): a fresh loader of training batches (model inputs and
    # labels, the training order of the run's seed) each call; None where the run loads no data.
    train_batches: Callable[[], Iterable[dict[str, torch.Tensor]]] | None = None


def meta_skeleton(context: ModelContext) -> nn.Module:
    """The architecture the task builds, on the meta device: no weights, no memory, built in a fraction of a
    second. The checks that need module names (head modules, a method's dry-run injection) run on it."""
    auto_class = context.auto_model_class
    if auto_class is None:  # a context built by hand (tests): the class the peft task type implies
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        causal = context.task_type == "CAUSAL_LM"
        auto_class = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    with torch.device("meta"):
        return auto_class.from_config(copy.deepcopy(context.hf_config))


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


class Method(Configurable, TrainingHooks):
    """Base class for every method; subclasses register with ``@METHODS.register`` and name their knobs'
    dataclass in ``Config`` (a ``MethodConfig`` subclass; the default has none).

    A method that injects modules flags them with ``peftbench.methods._common.mark_added``: that is how the
    rest of the run (the L2-SP regularizer) tells weights without a pretrained value from pretrained ones,
    without asking which method made the model.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    config: MethodConfig

    # --- before any model loads -------------------------------------------------------------
    def validate(self, context: ModelContext) -> None:
        """Raise ConfigError for a combination this method cannot serve."""

    # --- the transform ------------------------------------------------------------------------
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        raise NotImplementedError

    # --- optimizer ----------------------------------------------------------------------------
    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Trainable parameters split into decayed and non-decayed groups (biases and norms). A group may set
        ``LR_SCALE`` (its lr is the configured lr times it) instead of an absolute ``lr``."""
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

        from peftbench.results import WEIGHTS_FILE

        folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.contiguous().cpu() for k, v in self.trainable_state_dict(model).items()}
        save_file(weights, str(folder / WEIGHTS_FILE))

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
