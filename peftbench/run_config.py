"""Typed checks of the run-level config groups, applied before anything loads.

The task, the model and the method are typed configs of their own. What remains is the knobs that Lightning,
torch and transformers would only reject mid-run, or never: ``trainer.accumulate_grad_batches=0`` divides by
zero after training has started, a negative ``optimizer.weight_decay`` or ``scheduler.warmup_ratio=2.0``
train without complaint, ``seed=1.5`` silently becomes seed 1 under a new run id. Each group here is a
``Knobs`` dataclass of the keys peftbench relies on (other keys of the group pass through to the library,
which is then exercised on a stand-in: the optimizer and the schedule are built on one dummy parameter), so
every bad value stops with one line, ``<key>=<value>: <what is allowed>``.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from peftbench.config import dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.knobs import Knobs, knob

# transformers.get_scheduler's names (SchedulerType), listed here so a typo fails before transformers loads.
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
)  # fmt: skip


@dataclass
class RunKnobs(Knobs):
    """Top-level knobs of conf/train.yaml."""

    seed: int = knob(42, help="training seed (init of new modules, dropout, data order)", ge=0, le=2**32 - 1)
    run_test: bool = knob(True, help="evaluate on the test split after training")
    print_summary: bool = knob(True, help="print a short summary of the run at the end")


@dataclass
class InferenceKnobs(Knobs):
    PREFIX: ClassVar[str] = "inference"

    enabled: bool = knob(True, help="time inference after training (unmerged and merged)")
    max_batches: int = knob(20, help="test batches timed per variant (the first is untimed warm-up)", ge=1)


@dataclass
class OptimizerKnobs(Knobs):
    """The hyperparameters every optimizer peftbench ships takes (others pass through to its class)."""

    PREFIX: ClassVar[str] = "optimizer"

    lr: float = knob(2e-5, help="learning rate", gt=0)
    weight_decay: float = knob(0.0, help="decoupled weight decay for matrices", ge=0)
    eps: float = knob(1e-8, help="numerical floor in the denominator", gt=0)


@dataclass
class SchedulerKnobs(Knobs):
    PREFIX: ClassVar[str] = "scheduler"

    name: str = knob("linear", help="transformers scheduler name", choices=SCHEDULERS)
    warmup_ratio: float = knob(0.0, help="fraction of the training steps spent warming up", ge=0, le=1)


@dataclass
class TrainerKnobs(Knobs):
    """The Lightning Trainer knobs Lightning only rejects once training runs (or never)."""

    PREFIX: ClassVar[str] = "trainer"

    accumulate_grad_batches: int = knob(1, help="gradient accumulation steps", ge=1)
    gradient_clip_val: float | None = knob(None, help="clip the global gradient norm", ge=0)
    log_every_n_steps: int = knob(10, help="how often train/ metrics are logged", ge=1)
    num_sanity_val_steps: int = knob(0, help="pre-training validation batches", ge=-1)


def _known(cls: type[Knobs], node: Any) -> dict[str, Any]:
    """The keys of a group this check types (the rest pass through to the library that takes them)."""
    names = {field.name for field in dataclasses.fields(cls)}
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    return {key: value for key, value in values.items() if key in names}


def check_run_config(cfg: DictConfig) -> None:
    """Every run-level knob typed and in range, and the optimizer and schedule built on a stand-in parameter."""
    dataclass_from_cfg(RunKnobs, _known(RunKnobs, cfg), "")
    dataclass_from_cfg(InferenceKnobs, _known(InferenceKnobs, cfg.get("inference") or {}), "inference")
    dataclass_from_cfg(TrainerKnobs, _known(TrainerKnobs, cfg.trainer), "trainer")
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    dataclass_from_cfg(OptimizerKnobs, _known(OptimizerKnobs, optimizer), "optimizer")
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    dataclass_from_cfg(SchedulerKnobs, _known(SchedulerKnobs, scheduler), "scheduler")
    _stand_in_optimizer(optimizer, scheduler)


def _stand_in_optimizer(optimizer_cfg: dict[str, Any], scheduler_cfg: dict[str, Any]) -> None:
    """Build the optimizer (and its schedule) on one dummy parameter: an unknown argument or a value the class
    refuses shows up now, naming the key, not after the model has loaded."""
    from transformers import get_scheduler

    arguments = {k: v for k, v in optimizer_cfg.items() if k != "weight_decay"}  # given per parameter group
    target = arguments.get("_target_")
    try:
        factory = instantiate(arguments, _partial_=True)
    except InstantiationException as error:
        raise ConfigError(
            f"optimizer._target_={target}: {' '.join(str(error.__cause__ or error).split())}"
        ) from None
    parameter = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = factory([{"params": [parameter], "weight_decay": optimizer_cfg.get("weight_decay", 0.0)}])
    except TypeError:
        allowed = _arguments_of(factory.func)
        unknown = sorted(set(factory.keywords) - set(allowed)) if allowed else []
        key = unknown[0] if unknown else next(iter(factory.keywords), "?")
        raise ConfigError(
            f"optimizer.{key}: not an argument of {target}; allowed: {', '.join(allowed) or '(unknown)'}"
        ) from None
    except ValueError as error:  # torch's own range checks ("Invalid beta parameter at index 0: 1.5")
        raise ConfigError(f"optimizer ({target}): {error}") from None
    try:
        get_scheduler(
            scheduler_cfg.get("name", "linear"), optimizer, num_warmup_steps=0, num_training_steps=10
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler.name={scheduler_cfg.get('name')}: {error}") from None


def _arguments_of(cls: Any) -> list[str]:
    try:
        return [name for name in inspect.signature(cls).parameters if name not in ("self", "params")]
    except (TypeError, ValueError):
        return []
