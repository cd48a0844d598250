"""Building a run's method, regularizers and the context methods see, from the composed config.

Every path that builds a run (training, export, init_from, the benches, the tests) gets its method here,
so a method's knobs are checked the same way everywhere, before any weights load.

A method YAML is ``name`` (the results label), ``impl`` (the registry key: the module's file name),
``meta`` (what documents the method: paper, recommended lr and its source; never passed on) and the
knobs, which become the implementation's ``Config`` dataclass through ``dataclass_from_cfg`` (unknown
keys, types) and the dataclass's own rules (ranges, choices). Regularizer YAMLs work the same way
(``name``, ``impl``, knobs) with the regularizer registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from peftbench.config import dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Configurable, Knobs, Method, ModelContext, TrainingHooks, knob
from peftbench.models.backbone import ModelConfig
from peftbench.registry import Registry, RegistryError
from peftbench.regularizers import REGULARIZERS
from peftbench.tasks.config import TaskConfig

C = TypeVar("C", bound=Configurable)

# The keys of a component's YAML that are not its knobs (every method YAML has all three).
STRUCTURE_KEYS = ("name", "impl", "meta")
# Result files written before the `meta:` block kept these at the top of `method:`; export rebuilds such runs.
LEGACY_META_KEYS = ("paper", "lr", "lr_source")


@dataclasses.dataclass
class MethodMeta(Knobs):
    """A method YAML's ``meta:`` block: what documents the method (the leaderboard never labels rows by it)."""

    PREFIX = "method.meta"

    paper: str = knob(help="the paper (or other source) the recipe follows, cited as in the docs")
    lr: float = knob(
        help="recommended learning rate; conf/optimizer/adamw.yaml reads it as optimizer.lr", gt=0
    )
    lr_source: str = knob(help="where lr comes from (table, section), or why it was chosen")


def build_method(method_cfg: DictConfig) -> Method:
    """The registered implementation named by ``method.impl``, built from the YAML's knobs."""
    node = _container(method_cfg)
    if "meta" not in node and any(key in node for key in LEGACY_META_KEYS):
        node["meta"] = {key: node.pop(key) for key in LEGACY_META_KEYS if key in node}
    for key in ("name", "impl", "meta"):
        if not node.get(key):
            raise ConfigError(f"method.{key}: missing; every method YAML sets name, impl and meta")
    if not isinstance(node["meta"], dict):
        raise ConfigError(f"method.meta={node['meta']!r}: expected a block with paper, lr and lr_source")
    dataclass_from_cfg(MethodMeta, node["meta"], MethodMeta.PREFIX)
    return _build(METHODS, node, "method")


def build_regularizers(cfg: DictConfig) -> list[TrainingHooks]:
    """The configured regularizer (``regularizer.impl``), or none (``regularizer=none``: ``impl: null``)."""
    regularizer = cfg.get("regularizer")
    if not regularizer:
        return []
    node = _container(regularizer)
    if "_target_" in node and "impl" not in node:  # result files written before regularizers had a registry
        target = node.pop("_target_")
        node["impl"] = target.rsplit(".", 2)[-2] if target else None
    if node.get("impl") is None:
        return []
    return [_build(REGULARIZERS, node, "regularizer")]


def _container(node: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def _build(registry: Registry[C], node: dict[str, Any], prefix: str) -> C:
    """``registry[impl](name, Config)`` from a YAML node: the one path from YAML to a typed component."""
    try:
        cls = registry.get(str(node["impl"]))
    except RegistryError as error:
        raise ConfigError(f"{prefix}.impl={node['impl']}: {error}") from None
    knobs = {key: value for key, value in node.items() if key not in STRUCTURE_KEYS}
    if knobs and not dataclasses.fields(cls.Config):  # dataclass_from_cfg would list no allowed key at all
        raise ConfigError(
            f"{prefix}.{sorted(knobs)[0]}={knobs[sorted(knobs)[0]]!r}: unknown key; {prefix}.impl={node['impl']} "
            "has no knobs"
        )
    config = dataclass_from_cfg(cls.Config, knobs, prefix)
    return cls(str(node.get("name") or node["impl"]), config)


def model_context(model_cfg: ModelConfig, task: TaskConfig, hf_config: Any) -> ModelContext:
    """What methods see; the task's kind says which models it runs on, which head trains and which class
    builds the model (the peft task type comes from the task: SEQ_CLS, or CAUSAL_LM for generation)."""
    task.kind.check_model(model_cfg)
    return ModelContext(
        architecture=model_cfg.architecture,
        head_modules=task.kind.head_modules(list(model_cfg.head_modules)),
        layers_path=model_cfg.layers_path,
        num_layers=int(getattr(hf_config, "num_hidden_layers", 0)),
        task_type=task.peft_task_type,
        hf_config=hf_config,
        max_length=task.max_length,
        max_positions=model_cfg.max_positions,
        auto_model_class=task.kind.auto_model_class,
    )
