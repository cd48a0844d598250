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
import importlib.util
import inspect
import logging
import tempfile
import typing
from collections.abc import Callable, Mapping
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
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from safetensors.torch import load_file, save_file
from torch import nn

from peftbench.config import dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.methods import _lora_inits
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
    # Sizes peft only checks layer by layer at injection (where a failure would read as a target-module error).
    **{key: {"gt": 0} for key in ("n_frequency", "block_size", "vector_length", "num_vectors", "topk")},
    # The update's scale (alpha / r): a negative one flips the update's sign, which no recipe means.
    **{key: {"gt": 0} for key in ("lora_alpha", "alpha", "randlora_alpha", "delora_lambda")},
    **{
        key: {"ge": 0.0, "lt": 1.0}
        for key in (
            *("lora_dropout", "vera_dropout", "rank_dropout", "module_dropout", "encoder_dropout"),
            *("boft_dropout", "miss_dropout", "randlora_dropout", "vblora_dropout"),
        )
    },
}
# Rules for one config class; a class's rule for a field replaces the field's rule above. VeRA types `bias` as a
# plain str (LoRA's Literal is checked as its type; the rule repeats it for configs built in Python, which skip
# the type check). OFT and BOFT size a layer by either its block width or its block count, the other one 0.
PEFT_CLASS_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "LoraConfig": {"bias": {"choices": ("none", "all", "lora_only")}},
    "AdaLoraConfig": {"bias": {"choices": ("none", "all", "lora_only")}},
    "VeraConfig": {"bias": {"choices": ("none", "all", "vera_only")}},
    "OFTConfig": {"r": {"ge": 0}, "oft_block_size": {"ge": 0}, "num_cayley_neumann_terms": {"gt": 0}},
    "BOFTConfig": {
        "boft_block_size": {"ge": 0},
        "boft_block_num": {"ge": 0},
        "boft_n_butterfly_factor": {"ge": 1},
    },
}
# What a tuner needs of the size of every layer it targets, by config class: a field (0 = unused) and the layer
# dimensions it must divide. peft checks these layer by layer at injection, OFT only with a warning after
# quietly changing the block size.
PEFT_DIVIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "OFTConfig": {"oft_block_size": ("in",), "r": ("in",)},
    "BOFTConfig": {"boft_block_size": ("in",), "boft_block_num": ("in",)},
    "C3AConfig": {"block_size": ("in", "out")},
    "VBLoRAConfig": {"vector_length": ("in", "out")},
    "RoadConfig": {"group_size": ("out",)},
}
# The most a field may be on an in x out layer, by config class: (what the limit is, the limit).
PEFT_LAYER_LIMITS: dict[str, dict[str, tuple[str, Callable[[int, int], int]]]] = {
    "FourierFTConfig": {"n_frequency": ("in x out", lambda i, o: i * o)},
    "WaveFTConfig": {"n_frequency": ("in x out", lambda i, o: i * o)},
    "MissConfig": {"r": ("in_features", lambda i, o: i)},
    "ShiraConfig": {"r": ("in x out / (in + out)", lambda i, o: i * o // (i + o))},
}
# peft annotates init_lora_weights with a Literal whose "pissa_niter_[number of iters]" is a placeholder, so a
# literal check would refuse pissa_niter_16: the field is type-checked as bool | str instead.
PEFT_LOOSE_TYPES: dict[str, Any] = {"init_lora_weights": bool | str}
REWRITING_INITS = ("pissa", "olora", "corda")  # LoRA inits that move part of the base weight into the adapter
# Rules for the nested configs of LoRA inits (`_target_: peft.EvaConfig` ...), by the LoraConfig field holding
# them: peft checks LoftQ's bits and iterations only while quantising the loaded weights.
PEFT_SUBCONFIG_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "loftq_config": {"loftq_bits": {"choices": (4, 8)}, "loftq_iter": {"ge": 1}},
    "eva_config": {"rho": {"ge": 1.0}, "tau": {"ge": 0.0, "le": 1.0}},
}


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
        key: _nested_config(key, item) if isinstance(item, Mapping) and "_target_" in item else item
        for key, item in value.items()
        if key != "_target_"
    }
    dataclass_from_cfg(_field_types(cls), fields, PEFT_PREFIX)  # unknown keys and types, peft's annotations
    check_peft_knobs(cls, fields)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:  # peft's own __post_init__ checks: one line, not a traceback
        raise ConfigError(f"{PEFT_PREFIX} ({cls.__name__}): {' '.join(str(error).split())}") from None


def _nested_config(key: str, node: Mapping[str, Any]) -> Any:
    """A nested config node (``_target_`` + fields): a dataclass target gets the same checks as the top level
    (unknown keys, types, ``PEFT_SUBCONFIG_RULES``) and its own __post_init__ errors as one line."""
    prefix = f"{PEFT_PREFIX}.{key}"
    module_name, _, class_name = str(node["_target_"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{prefix}._target_={node['_target_']}: cannot import it") from None
    if not dataclasses.is_dataclass(cls):
        return instantiate(node)
    fields = {k: v for k, v in node.items() if k != "_target_"}
    dataclass_from_cfg(_field_types(cls), fields, prefix)
    hints = typing.get_type_hints(cls)
    for name, rules in PEFT_SUBCONFIG_RULES.get(key, {}).items():
        if name in fields:
            check_value(f"{prefix}.{name}", fields[name], rules, integer_annotation(hints.get(name)))
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix} ({cls.__name__}): {' '.join(str(error).split())}") from None


def check_peft_knobs(cls: type[PeftConfig], values: Mapping[str, Any]) -> None:
    """The rules peft lacks, on the given values of a ``cls`` config."""
    hints = _field_types(cls).__annotations__
    class_rules = PEFT_CLASS_RULES.get(cls.__name__, {})
    for key, value in values.items():
        rules = class_rules.get(key, PEFT_KNOB_RULES.get(key, {}))
        if rules:
            check_value(f"{PEFT_PREFIX}.{key}", value, rules, integer_annotation(hints.get(key)))


@functools.cache
def _field_types(cls: type) -> type:
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
            self._validate_tokens(context)
            self._validate_butterfly()
            self._validate_targets(context)
        if (
            _lora_inits.init_name(self.peft_config) == "loftq"
            and importlib.util.find_spec("bitsandbytes") is None
        ):
            raise ConfigError(
                f"{PEFT_PREFIX}.init_lora_weights=loftq: LoftQ quantises with bitsandbytes, which is not installed "
                "(pip install 'peftbench[qlora]')"
            )

    def _validate_prompt(self, context: ModelContext) -> None:
        """Virtual tokens take position slots: input plus prompt must fit the position embeddings."""
        tokens = self.peft_config.num_virtual_tokens
        max_length, max_positions = context.max_length, context.max_positions
        if max_length is not None and max_positions is not None and max_length + tokens > max_positions:
            raise ConfigError(
                f"{PEFT_PREFIX}.num_virtual_tokens={tokens}: task.max_length ({max_length}) + virtual "
                f"tokens must be <= model.max_positions ({max_positions})"
            )

    def _validate_tokens(self, context: ModelContext) -> None:
        """Trainable tokens: peft trains nothing but the head when given no token ids, and fails only in the
        first forward pass on an id past the vocabulary."""
        indices = getattr(self.peft_config, "token_indices", None)
        if indices is None:
            return
        vocab = getattr(context.hf_config, "vocab_size", None)
        outside = [i for i in indices if i < 0 or (vocab is not None and i >= vocab)]
        if not indices or outside:
            allowed = f"token ids in [0, {vocab})" if vocab is not None else "token ids >= 0"
            raise ConfigError(
                f"{PEFT_PREFIX}.token_indices={list(indices)!r}: expected a non-empty list of {allowed} "
                "(this model's vocabulary)"
            )

    def _validate_butterfly(self) -> None:
        """BOFT's butterfly factors need peft's CUDA extension; without it peft quietly runs one factor."""
        factors = getattr(self.peft_config, "boft_n_butterfly_factor", 1)
        if factors > 1:
            from peft.tuners.boft.layer import get_fbd_cuda

            if get_fbd_cuda() is None:
                raise ConfigError(
                    f"{PEFT_PREFIX}.boft_n_butterfly_factor={factors}: > 1 needs peft's fbd_cuda extension "
                    "(CUDA and ninja), which does not build here, and peft would quietly use 1; allowed here: 1"
                )

    def _validate_layer_sizes(self, skeleton: nn.Module, peft_config: PeftConfig) -> None:
        """``PEFT_DIVIDES`` and ``PEFT_LAYER_LIMITS`` on every linear layer peft's own matching targets."""
        divides = PEFT_DIVIDES.get(type(peft_config).__name__, {})
        limits = PEFT_LAYER_LIMITS.get(type(peft_config).__name__, {})
        layers = _targeted_linear_layers(skeleton, peft_config) if divides or limits else []
        if not layers:
            return  # nothing matched: the dry run names the target modules
        for key, dims in divides.items():
            value = getattr(peft_config, key)
            sizes = {name: [getattr(layer, f"{dim}_features") for dim in dims] for name, layer in layers}
            wrong = next((name for name, ws in sizes.items() if value and any(w % value for w in ws)), None)
            if wrong is not None:
                every = {w for widths in sizes.values() for w in widths}
                allowed = [n for n in range(1, min(every) + 1) if all(w % n == 0 for w in every)]
                raise ConfigError(
                    f"{PEFT_PREFIX}.{key}={value}: must divide the {' and '.join(f'{d}_features' for d in dims)} "
                    f"of every targeted layer ({wrong}: {_shape(skeleton, wrong)}); allowed here: "
                    f"{', '.join(map(str, allowed))}"
                )
        for key, (what, limit) in limits.items():
            value = getattr(peft_config, key)
            name, most = min(
                ((name, limit(layer.in_features, layer.out_features)) for name, layer in layers),
                key=lambda item: item[1],
            )
            if value is not None and value > most:
                raise ConfigError(
                    f"{PEFT_PREFIX}.{key}={value}: expected at most {what} of every targeted layer, "
                    f"<= {most} here ({name}: {_shape(skeleton, name)})"
                )

    def _validate_targets(self, context: ModelContext) -> None:
        """Dry-run the injection on a weightless (meta-device) copy of the architecture: peft's own
        matching decides, so target names that match nothing fail here instead of after loading. The
        layer-size rules run first, on the layers that matching picks, so a wrong size names its own knob."""
        if context.hf_config is None:
            return
        skeleton = meta_skeleton(context)
        self._validate_layer_sizes(skeleton, self._config_for(context))
        try:
            # Data-driven and quantising inits need real weights or data: the dry run injects plain LoRA.
            dry_run = _lora_inits.dry_run_config(self._config_for(context))
            get_peft_model(skeleton, dry_run, low_cpu_mem_usage=True)
        except NotImplementedError:  # a data-dependent init (SHiRA's sparse mask) has no meta-device form
            config = self._config_for(context)
            if config.target_modules is not None and not _targeted_linear_layers(skeleton, config):
                self._target_error("no linear layer matches them")
        except (ValueError, TypeError) as error:  # TypeError: a layer type the tuner does not support
            reason = " ".join(str(error).split()).split(". ")[0].rstrip(".")  # peft's first sentence
            self._target_error(reason)

    def _target_error(self, reason: str) -> typing.NoReturn:
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
        elif context.head_modules and not peft_config.is_prompt_learning:
            # A config without the field (trainable tokens): peft's task models read the attribute all the same,
            # so the head trains; it is not written to adapter_config.json (peft's from_pretrained lacks it).
            peft_config.modules_to_save = sorted(context.head_modules)
        return peft_config

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            # Casts norms to fp32, freezes the quantised base and enables input grads (peft's recipe).
            # transformers 5 renamed is_gradient_checkpointing (the old name warns, and goes in v6)
            checkpointing = getattr(model, "is_activation_checkpointing", None)
            if checkpointing is None:
                checkpointing = getattr(model, "is_gradient_checkpointing", False)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(checkpointing))
        if self.peft_config.peft_type == PeftType.PREFIX_TUNING:
            _accept_past_key_values(model)
        pretrained = {id(param) for param in model.parameters()}
        config = self._config_for(context)
        init = _lora_inits.init_name(config)
        if init == "corda":  # covariance pass on the base model; peft then builds the adapter from it
            batches = _lora_inits.training_batches(context.train_batches, init)
            _lora_inits.corda_preprocess(model, config, batches, self.calibration_samples())
        loftq_here = init == "loftq" and not _lora_inits.peft_runs_loftq()
        model = get_peft_model(model, _lora_inits.without_loftq(config) if loftq_here else config)
        if init == "eva":  # SVD of the layer inputs on the injected model (may redistribute ranks)
            _lora_inits.eva_init(model, _lora_inits.training_batches(context.train_batches, init))
        elif loftq_here:
            _lora_inits.loftq_init(model, config.loftq_config)
        mark_created(model, pretrained)  # what peft injected is new: L2-SP and friends read the flags
        if init.startswith(REWRITING_INITS):  # keep the initial adapter: export converts against it
            self._initial_adapter = {
                k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
            }
        return model

    def calibration_samples(self) -> int:
        """Training rows a CorDA init runs for its covariances: peft's CorDA example default (``impl: corda``
        makes it a knob)."""
        return _lora_inits.CORDA_SAMPLES

    # --- optimizer ----------------------------------------------------------------------------------
    def optimizer_class(self) -> type[torch.optim.Optimizer] | None:
        return self._optimizer_class

    # --- accounting, export and inference -----------------------------------------------------------
    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """peft's adapter state. Tuners with bases shared by all layers (RandLoRA) list the shared tensor
        under every layer; each repeat is a copy, as peft's own save_pretrained writes it (safetensors
        refuses tensors that share memory)."""
        state, seen = {}, set()
        for name, tensor in get_peft_model_state_dict(model).items():
            tensor = tensor.detach()
            storage = tensor.untyped_storage().data_ptr()
            state[name] = tensor.clone() if storage in seen else tensor
            seen.add(storage)
        return state

    def load_trainable_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        result = set_peft_model_state_dict(model, state)
        # peft loads soft prompts itself, outside load_state_dict, which then lists them as unexpected.
        unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if k != "prompt_embeddings"]
        if unexpected:
            raise ValueError(f"adapter weights that match nothing in the model: {unexpected[:5]}")

    def save_adapter(self, model: nn.Module, folder: Path) -> None:
        """peft's adapter folder (adapter_config.json + weights), loadable with PeftModel.from_pretrained.
        Tuners that rewrite the base weights at init (PiSSA, OLoRA, CorDA) are saved converted to a plain
        LoRA of twice the rank, so the adapter applies to the original base model (peft's conversion).
        Each module to save is listed once (peft's task models append their default heads to ours)."""
        _list_modules_to_save_once(model)
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


def _list_modules_to_save_once(model: nn.Module) -> None:
    """peft's sequence-classification model extends ``modules_to_save`` with its own head names (``classifier``,
    ``score``) although ``_config_for`` already listed the model's head: the saved adapter_config.json would name
    ``classifier`` twice. The order is kept; the set of modules, and so what trains and loads, is unchanged."""
    for config in (getattr(model, "peft_config", None) or {}).values():
        modules = getattr(config, "modules_to_save", None)
        if isinstance(modules, list):
            config.modules_to_save = list(dict.fromkeys(modules))


def _targeted_linear_layers(model: nn.Module, peft_config: PeftConfig) -> list[tuple[str, nn.Linear]]:
    """The linear layers of ``model`` that ``peft_config`` targets, by peft's own matching (``all-linear``
    expanded as peft does); none when the config leaves its targets to peft's per-architecture defaults."""
    if getattr(peft_config, "target_modules", None) is None:
        return []
    peft_config = _maybe_include_all_linear_layers(copy.deepcopy(peft_config), model)
    return [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear) and check_target_module_exists(peft_config, name)
    ]


def _shape(model: nn.Module, name: str) -> str:
    layer = model.get_submodule(name)
    return f"{layer.in_features} -> {layer.out_features} features"


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
