"""The bridge to Hugging Face peft: any peft tuner runs from YAML alone.

A method YAML names ``impl: peft_tuner`` and a ``peft_config`` with a ``_target_`` such as
``peft.LoraConfig``; Hydra instantiates it and this class injects it. The task head is added to
``modules_to_save`` so it trains and is saved with the adapter. Models loaded in 4 bit get peft's
k-bit preparation; a YAML may name an optimizer class (e.g. paged AdamW for QLoRA).

Knob checks peft leaves to injection time (or never makes) happen in ``__init__`` and ``validate``,
so a bad value stops before any weight loads with one ConfigError line.
"""

from __future__ import annotations

import copy
import inspect
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
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

from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Method, ModelContext

log = logging.getLogger("peftbench")

# Allowed values of knobs that peft does not check itself (or checks only once the model is loaded).
BIAS_CHOICES = {"LoraConfig": ("none", "all", "lora_only"), "AdaLoraConfig": ("none", "all", "lora_only"),
                "VeraConfig": ("none", "all", "vera_only")}  # fmt: skip
RANK_KEYS = ("r", "init_r", "target_r", "num_virtual_tokens")  # each must be a positive integer
REWRITING_INITS = ("pissa", "olora", "corda")  # LoRA inits that move part of the base weight into the adapter
DROPOUT_KEYS = ("lora_dropout", "vera_dropout", "rank_dropout", "module_dropout", "encoder_dropout")


@METHODS.register
class PeftTuner(Method):
    def __init__(self, name: str, peft_config: PeftConfig, optimizer_class: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(peft_config, PeftConfig):
            raise ConfigError(
                f"method.peft_config={peft_config!r}: expected a peft config (e.g. _target_: peft.LoraConfig)"
            )
        self.peft_config = peft_config
        self._optimizer_class_path = optimizer_class
        self._initial_adapter: dict[str, torch.Tensor] | None = None
        self._optimizer_class = _resolve_optimizer(optimizer_class) if optimizer_class else None
        self._check_knobs()

    # --- checks before any weight loads -------------------------------------------------------------
    def _check_knobs(self) -> None:
        config, kind = self.peft_config, type(self.peft_config).__name__
        for key in RANK_KEYS:
            value = getattr(config, key, None)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"method.peft_config.{key}={value!r}: must be a positive integer")
        for key in DROPOUT_KEYS:
            value = getattr(config, key, None)
            if value is not None and not (0.0 <= value < 1.0):
                raise ConfigError(f"method.peft_config.{key}={value!r}: must be in [0, 1)")
        bias = getattr(config, "bias", None)
        if kind in BIAS_CHOICES and bias not in BIAS_CHOICES[kind]:
            raise ConfigError(f"method.peft_config.bias={bias!r}: allowed {', '.join(BIAS_CHOICES[kind])}")

    def validate(self, context: ModelContext) -> None:
        task_type = getattr(self.peft_config.task_type, "value", self.peft_config.task_type)
        if task_type is not None and task_type != context.task_type:
            raise ConfigError(
                f"method.peft_config.task_type={task_type}: this task needs {context.task_type}"
            )
        if self.peft_config.is_prompt_learning:
            self._validate_prompt(context)
        else:
            self._validate_targets(context)

    def _validate_prompt(self, context: ModelContext) -> None:
        """Virtual tokens take position slots: input plus prompt must fit the position embeddings."""
        tokens = self.peft_config.num_virtual_tokens
        max_length, max_positions = context.extra.get("max_length"), context.extra.get("max_positions")
        if max_length is not None and max_positions is not None and max_length + tokens > max_positions:
            raise ConfigError(
                f"method.peft_config.num_virtual_tokens={tokens}: task.max_length ({max_length}) + virtual "
                f"tokens must be <= model.max_positions ({max_positions})"
            )

    def _validate_targets(self, context: ModelContext) -> None:
        """Dry-run the injection on a weightless (meta-device) copy of the architecture: peft's own
        matching decides, so target names that match nothing fail here instead of after loading."""
        hf_config = context.extra.get("hf_config")
        if hf_config is None:
            return
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        auto_class = (
            AutoModelForCausalLM if context.task_type == "CAUSAL_LM" else AutoModelForSequenceClassification
        )
        with torch.device("meta"):
            skeleton = auto_class.from_config(copy.deepcopy(hf_config))
        try:
            get_peft_model(skeleton, self._config_for(context), low_cpu_mem_usage=True)
        except ValueError as error:
            reason = " ".join(str(error).split()).split(". ")[0].rstrip(".")  # peft's first sentence
            targets = getattr(self.peft_config, "target_modules", None)
            targets = sorted(targets) if isinstance(targets, set | frozenset) else targets
            raise ConfigError(
                f"method.peft_config.target_modules={targets!r}: {reason} (use a model.target_modules "
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
        model = get_peft_model(model, self._config_for(context))
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
