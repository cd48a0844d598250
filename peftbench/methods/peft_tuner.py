"""The bridge to Hugging Face peft: any peft tuner runs from YAML alone.

A method YAML names ``impl: peft_tuner`` and a ``peft_config`` with a ``_target_`` such as
``peft.LoraConfig``; this class injects it. The task head is added to ``modules_to_save`` so it trains
and is saved with the adapter. Models loaded in 4 bit get peft's k-bit preparation; a YAML may name an
optimizer class (e.g. paged AdamW for QLoRA).

peft's config dataclasses are the knobs' types and documentation: ``peft_config`` is checked against the
named class's own fields (unknown keys, types) and then against the few rules peft leaves to injection
time or never checks (``PEFT_KNOB_RULES``, by field name, for every tuner that has the field), so a bad
value stops before any weight loads with one ConfigError line. Checks that need the architecture
(target modules that match nothing, soft prompts that overflow the positions) run in ``validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import logging
import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from peft import (
    PeftConfig,
    PeftModel,
    PeftType,
    get_peft_model,
    get_peft_model_state_dict,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import nn

from peftbench.config import dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.methods._common import mark_created
from peftbench.methods.base import (
    METHODS,
    Method,
    MethodConfig,
    ModelContext,
    check_value,
    integer_annotation,
    knob,
    meta_skeleton,
)

log = logging.getLogger("peftbench")

PEFT_PREFIX = "method.peft_config"
# What peft leaves unchecked until injection (or never checks), declared once by field name: it applies to
# every peft config class that has the field.
PEFT_KNOB_RULES: dict[str, dict[str, Any]] = {
    **{key: {"gt": 0} for key in ("r", "init_r", "target_r", "num_virtual_tokens")},
    # The update's scale (alpha / r): a negative one flips the update's sign, which no recipe means.
    **{key: {"gt": 0} for key in ("lora_alpha", "alpha")},
    **{
        key: {"ge": 0.0, "lt": 1.0}
        for key in ("lora_dropout", "vera_dropout", "rank_dropout", "module_dropout", "encoder_dropout")
    },
}
# Rules for one config class: VeRA types `bias` as a plain str (LoRA's Literal is checked as its type; the
# rule repeats it for configs built in Python, which skip the type check).
PEFT_CLASS_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "LoraConfig": {"bias": {"choices": ("none", "all", "lora_only")}},
    "AdaLoraConfig": {"bias": {"choices": ("none", "all", "lora_only")}},
    "VeraConfig": {"bias": {"choices": ("none", "all", "vera_only")}},
}
# peft annotates init_lora_weights with a Literal whose "pissa_niter_[number of iters]" is a placeholder, so a
# literal check would refuse pissa_niter_16: the field is type-checked as bool | str instead.
PEFT_LOOSE_TYPES: dict[str, Any] = {"init_lora_weights": bool | str}
REWRITING_INITS = ("pissa", "olora", "corda")  # LoRA inits that move part of the base weight into the adapter


@dataclass
class PeftTunerConfig(MethodConfig):
    peft_config: Any = knob(
        help="a peft config: `_target_: peft.LoraConfig` (any peft.*Config) and its fields, documented by peft"
    )
    optimizer_class: str | None = knob(
        None, help="import path of an optimizer the method needs (QLoRA: bitsandbytes.optim.PagedAdamW)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_config = peft_config_from(self.peft_config)


def peft_config_from(value: Any) -> PeftConfig:
    """A checked peft config from a YAML node (``_target_`` + fields) or an already built one."""
    if isinstance(value, PeftConfig):
        check_peft_knobs(type(value), {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        return value
    if not isinstance(value, Mapping) or not value.get("_target_"):
        raise ConfigError(f"{PEFT_PREFIX}={value!r}: expected a peft config (e.g. _target_: peft.LoraConfig)")
    target = str(value["_target_"])
    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, PeftConfig)):
        raise ConfigError(f"{PEFT_PREFIX}._target_={target}: not a peft config class (e.g. peft.LoraConfig)")
    # Nested configs (loftq_config, eva_config, ...) may name their own class.
    fields = {
        key: instantiate(item) if isinstance(item, Mapping) and "_target_" in item else item
        for key, item in value.items()
        if key != "_target_"
    }
    dataclass_from_cfg(_field_types(cls), fields, PEFT_PREFIX)  # unknown keys and types, peft's annotations
    check_peft_knobs(cls, fields)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:  # peft's own __post_init__ checks: one line, not a traceback
        raise ConfigError(f"{PEFT_PREFIX} ({cls.__name__}): {' '.join(str(error).split())}") from None


def check_peft_knobs(cls: type[PeftConfig], values: Mapping[str, Any]) -> None:
    """The rules peft lacks, on the given values of a ``cls`` config."""
    hints = _field_types(cls).__annotations__
    class_rules = PEFT_CLASS_RULES.get(cls.__name__, {})
    for key, value in values.items():
        rules = {**PEFT_KNOB_RULES.get(key, {}), **class_rules.get(key, {})}
        if rules:
            check_value(f"{PEFT_PREFIX}.{key}", value, rules, integer_annotation(hints.get(key)))


@functools.cache
def _field_types(cls: type[PeftConfig]) -> type:
    """A dataclass with ``cls``'s init fields and annotations (``PEFT_LOOSE_TYPES`` loosened), all optional:
    what ``dataclass_from_cfg`` checks a YAML node against before peft builds the real config."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation this peft version cannot resolve: check keys only, not types
        hints = {}
    spec = [
        (f.name, PEFT_LOOSE_TYPES.get(f.name, hints.get(f.name, Any)), dataclasses.field(default=None))
        for f in dataclasses.fields(cls)
        if f.init
    ]
    return dataclasses.make_dataclass(f"{cls.__name__}Fields", spec)


@METHODS.register
class PeftTuner(Method):
    Config = PeftTunerConfig
    config: PeftTunerConfig

    def __init__(self, name: str, config: PeftTunerConfig | None = None, **knobs: Any) -> None:
        super().__init__(name, config, **knobs)
        path = self.config.optimizer_class
        self._optimizer_class = _resolve_optimizer(path) if path else None
        self._initial_adapter: dict[str, torch.Tensor] | None = None

    @property
    def peft_config(self) -> PeftConfig:
        return self.config.peft_config

    # --- checks before any weight loads -------------------------------------------------------------
    def validate(self, context: ModelContext) -> None:
        task_type = getattr(self.peft_config.task_type, "value", self.peft_config.task_type)
        if task_type is not None and task_type != context.task_type:
            raise ConfigError(f"{PEFT_PREFIX}.task_type={task_type}: this task needs {context.task_type}")
        if self.peft_config.is_prompt_learning:
            self._validate_prompt(context)
        else:
            self._validate_targets(context)

    def _validate_prompt(self, context: ModelContext) -> None:
        """Virtual tokens take position slots: input plus prompt must fit the position embeddings."""
        tokens = self.peft_config.num_virtual_tokens
        max_length, max_positions = context.max_length, context.max_positions
        if max_length is not None and max_positions is not None and max_length + tokens > max_positions:
            raise ConfigError(
                f"{PEFT_PREFIX}.num_virtual_tokens={tokens}: task.max_length ({max_length}) + virtual "
                f"tokens must be <= model.max_positions ({max_positions})"
            )

    def _validate_targets(self, context: ModelContext) -> None:
        """Dry-run the injection on a weightless (meta-device) copy of the architecture: peft's own
        matching decides, so target names that match nothing fail here instead of after loading."""
        if context.hf_config is None:
            return
        skeleton = meta_skeleton(context)
        try:
            get_peft_model(skeleton, self._config_for(context), low_cpu_mem_usage=True)
        except ValueError as error:
            reason = " ".join(str(error).split()).split(". ")[0].rstrip(".")  # peft's first sentence
            targets = getattr(self.peft_config, "target_modules", None)
            targets = sorted(targets) if isinstance(targets, set | frozenset) else targets
            raise ConfigError(
                f"{PEFT_PREFIX}.target_modules={targets!r}: {reason} (use a model.target_modules "
                "set or module names of this model)"
            ) from None

    # --- the transform ------------------------------------------------------------------------------
    def _config_for(self, context: ModelContext) -> PeftConfig:
        peft_config = copy.deepcopy(self.peft_config)
        if hasattr(peft_config, "modules_to_save") and context.head_modules:
            peft_config.modules_to_save = sorted(
                set(peft_config.modules_to_save or []) | set(context.head_modules)
            )
        return peft_config

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            # Casts norms to fp32, freezes the quantised base and enables input grads (peft's recipe).
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=bool(getattr(model, "is_gradient_checkpointing", False))
            )
        if self.peft_config.peft_type == PeftType.PREFIX_TUNING:
            _accept_past_key_values(model)
        pretrained = {id(param) for param in model.parameters()}
        model = get_peft_model(model, self._config_for(context))
        mark_created(model, pretrained)  # what peft injected is new: L2-SP and friends read the flags
        init = str(getattr(self.peft_config, "init_lora_weights", "")).lower()
        if init.startswith(REWRITING_INITS):  # keep the initial adapter: export converts against it
            self._initial_adapter = {
                k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
            }
        return model

    # --- optimizer ----------------------------------------------------------------------------------
    def optimizer_class(self) -> type[torch.optim.Optimizer] | None:
        return self._optimizer_class

    # --- accounting, export and inference -----------------------------------------------------------
    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in get_peft_model_state_dict(model).items()}

    def load_trainable_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        result = set_peft_model_state_dict(model, state)
        # peft loads soft prompts itself, outside load_state_dict, which then lists them as unexpected.
        unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if k != "prompt_embeddings"]
        if unexpected:
            raise ValueError(f"adapter weights that match nothing in the model: {unexpected[:5]}")

    def save_adapter(self, model: nn.Module, folder: Path) -> None:
        """peft's adapter folder (adapter_config.json + weights), loadable with PeftModel.from_pretrained.
        Tuners that rewrite the base weights at init (PiSSA, OLoRA, CorDA) are saved converted to a plain
        LoRA of twice the rank, so the adapter applies to the original base model (peft's conversion)."""
        if self._initial_adapter is None:
            model.save_pretrained(str(folder))
            return
        trained = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        with tempfile.TemporaryDirectory(prefix="peftbench-init-") as initial:
            set_peft_model_state_dict(model, self._initial_adapter)
            model.save_pretrained(initial)
            set_peft_model_state_dict(model, trained)
            model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=initial)
        # peft's conversion keeps only the LoRA tensors: put the trained head (modules_to_save) back.
        saved_path = folder / "adapter_model.safetensors"
        saved = load_file(str(saved_path))
        extra = {k: v.contiguous().cpu() for k, v in trained.items() if "lora_" not in k and k not in saved}
        if extra:
            save_file({**saved, **extra}, str(saved_path))

    def merged_model(self, model: nn.Module) -> nn.Module | None:
        """peft's merge_and_unload where the tuner has one (LoRA family, IA3, VeRA, LN tuning, ...);
        prompt-style tuners add tokens instead of changing weights, so they cannot be merged."""
        if not isinstance(model, PeftModel) or self.peft_config.is_prompt_learning:
            return None
        merge = getattr(model, "merge_and_unload", None)
        if merge is None:
            return None
        try:
            return merge()
        except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
            log.warning("%s cannot be merged: %s", self.name, error)
            return None

    def extra_input_tokens(self) -> int:
        return int(self.peft_config.num_virtual_tokens) if self.peft_config.is_prompt_learning else 0

    def extra_processed_tokens(self) -> int:
        # Prefix tuning's virtual tokens are past keys/values: attended to, never run through the layers.
        if getattr(self.peft_config, "peft_type", None) == PeftType.PREFIX_TUNING:
            return 0
        return self.extra_input_tokens()


def _accept_past_key_values(model: nn.Module) -> None:
    """Prefix tuning hands its prefixes to the model as ``past_key_values``. transformers 5 renamed that
    argument to ``cache`` (still accepting the old name as a deprecated keyword), but peft 0.21 looks for
    the old name in the forward *signature* and refuses models without it. Give the instance a forward
    whose signature names it and which passes it on as ``cache``; models that still name it are untouched.
    (Task models without ``cache`` in their own signature pass it down through ``**kwargs``.)"""
    forward = model.forward
    parameters = inspect.signature(forward).parameters
    if "past_key_values" in parameters:
        return

    def forward_with_prefix(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    # Keep the real argument names visible too: generate() checks its keywords against this signature.
    prefix = inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY, default=None)
    names = list(parameters.values())
    tail = [p for p in names if p.kind == inspect.Parameter.VAR_KEYWORD]
    head = [p for p in names if p.kind != inspect.Parameter.VAR_KEYWORD]
    forward_with_prefix.__signature__ = inspect.Signature([*head, prefix, *tail])  # type: ignore[attr-defined]
    model.forward = forward_with_prefix


def _resolve_optimizer(path: str) -> type[torch.optim.Optimizer]:
    """Import the optimizer class a YAML names (e.g. bitsandbytes.optim.PagedAdamW)."""
    try:
        return get_class(path)
    except Exception as error:  # ImportError, or Hydra's wrapper around it
        hint = "; pip install 'peftbench[qlora]'" if path.startswith("bitsandbytes") else ""
        cause = " ".join(str(error).split())[:200]
        raise ConfigError(f"method.optimizer_class={path}: cannot import ({cause}){hint}") from None
