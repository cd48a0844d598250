"""Load a backbone and its tokenizer from a hub id, a local folder, an offline pip package or a config."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftbench.errors import AssetMissingError, ConfigError

PKG_PREFIX = "pkg:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FETCH_HINT = "run `peftbench-assets fetch` (or `make assets`) to install the offline assets"


@dataclass
class ModelConfig:
    """The ``model:`` config group, checked before anything is loaded."""

    name: str
    name_or_path: str | None = None  # hub id, local folder, or pkg:<python package carrying the weights>
    revision: str | None = None
    config: Any = None  # a transformers config (_target_) for random init; wins over name_or_path
    tokenizer: Any = None  # None: load from name_or_path; or a _target_ factory building one offline
    architecture: str = "bert"
    head_modules: list[str] = field(default_factory=lambda: ["classifier"])
    layers_path: str = "bert.encoder.layer"
    target_modules: dict[str, Any] = field(default_factory=dict)
    adapter_points: dict[str, str] = field(default_factory=dict)  # sublayer outputs inside a block (adapters)
    dtype: str = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    max_positions: int = 512

    def __post_init__(self) -> None:
        if self.config is None and not self.name_or_path:
            raise ConfigError("model.name_or_path=null: set a hub id, a local folder or pkg:<package>")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.dtype}: allowed {sorted(DTYPES)}")

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ModelConfig:
        from peftbench.config import dataclass_from_cfg

        return dataclass_from_cfg(cls, cfg, "model")


def resolve_source(name_or_path: str) -> str:
    """Turn ``pkg:<package>`` into the folder the package ships; pass hub ids and folders through."""
    if not name_or_path.startswith(PKG_PREFIX):
        return name_or_path
    package = name_or_path[len(PKG_PREFIX) :]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise AssetMissingError(f"model package '{package}' is not installed; {FETCH_HINT}")
    module = importlib.import_module(package)
    if hasattr(module, "get_model_path"):
        return str(module.get_model_path())
    return str(Path(next(iter(spec.submodule_search_locations))))


def load_hf_config(model_cfg: ModelConfig, num_labels: int) -> PretrainedConfig:
    """The architecture config alone (no weights): cheap, so validation can use layer counts early."""
    if model_cfg.config is not None:
        config = instantiate(model_cfg.config)
    else:
        config = AutoConfig.from_pretrained(
            resolve_source(model_cfg.name_or_path), revision=model_cfg.revision
        )
    config.num_labels = num_labels
    if num_labels == 1:
        config.problem_type = "regression"
    return config


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    if model_cfg.tokenizer is not None:
        tokenizer = instantiate(model_cfg.tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_source(model_cfg.name_or_path), revision=model_cfg.revision
        )
    if tokenizer.pad_token is None:  # decoders often ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_cfg: ModelConfig, config: PretrainedConfig, pad_token_id: int | None
) -> tuple[PreTrainedModel, list[str]]:
    """The classification model, and the names of weights that were freshly initialised."""
    kwargs: dict[str, Any] = {"dtype": DTYPES[model_cfg.dtype]}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    if model_cfg.config is not None:
        model = AutoModelForSequenceClassification.from_config(config, **kwargs)
        new_weights = []  # everything is random: nothing to single out
    else:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            resolve_source(model_cfg.name_or_path),
            config=config,
            revision=model_cfg.revision,
            output_loading_info=True,
            **kwargs,
        )
        new_weights = sorted(info["missing_keys"])
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, new_weights


def model_fingerprint(model_cfg: ModelConfig) -> dict[str, Any]:
    """What identifies the weights: revision for hub ids, package version for offline packages."""
    info: dict[str, Any] = {"name_or_path": model_cfg.name_or_path, "revision": model_cfg.revision}
    if model_cfg.config is not None:
        info["random_init_config"] = (
            OmegaConf.to_container(model_cfg.config, resolve=True)
            if isinstance(model_cfg.config, DictConfig)
            else model_cfg.config
        )
    elif model_cfg.name_or_path and model_cfg.name_or_path.startswith(PKG_PREFIX):
        from importlib.metadata import PackageNotFoundError, version

        package = model_cfg.name_or_path[len(PKG_PREFIX) :]
        try:
            info["package_version"] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            info["package_version"] = None
    return info
