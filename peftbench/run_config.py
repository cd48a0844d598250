"""Typed checks of the run-level config groups, applied before anything loads.

The task, the model and the method are typed configs of their own. What remains is the knobs that Lightning,
torch and transformers would only reject mid-run, or never: ``trainer.accumulate_grad_batches=0`` divides by
zero after training has started, a negative ``optimizer.weight_decay`` or ``scheduler.warmup_ratio=2.0``
train without complaint, ``seed=1.5`` silently becomes seed 1 under a new run id. Each group here is a
``Knobs`` dataclass of the keys peftbench relies on (other keys of the group pass through to the library,
which is then exercised on a stand-in: the optimizer and the schedule are built on one dummy parameter), so
every bad value stops with one line, ``<key>=<value>: <what is allowed>``.

Two groups are checked against what they name rather than a dataclass: the model's weights source must exist on
this machine (``model.name_or_path``: a local folder, an installed ``pkg:`` package), and every ``logger`` entry
is checked against its class's signature (and, for Weights & Biases, ``wandb.init``'s, which receives the rest):
loggers take most of their arguments lazily, when they first log, i.e. mid-training.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from peftbench.config import _check_type, dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.knobs import Knobs, knob
from peftbench.models.backbone import ModelConfig, check_weights_source

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
    check_weights_source(ModelConfig.from_cfg(cfg.model))
    check_loggers(cfg.get("logger"))


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


# --- loggers: checked against the signatures that will receive their values ---------------------------------
FOLDER_KEYS = (
    "save_dir",
    "dir",
    "log_dir",
    "root_dir",
)  # where a logger writes: must be (or become) a folder


def check_loggers(node: DictConfig | None) -> None:
    """Every ``logger.<name>`` entry: its class imports, every key is an argument of the class (or of
    ``wandb.init``, which a WandbLogger hands the rest to), values have the argument's type or literal choices,
    and the folders it writes to can be folders. Lightning's loggers only use most of these when they first log."""
    for name, entry in (node or {}).items():
        if not entry or not entry.get("_target_"):
            continue
        values = OmegaConf.to_container(entry, resolve=True)
        target = values.pop("_target_")
        prefix = f"logger.{name}"
        try:
            cls = get_class(target)
        except Exception as error:  # noqa: BLE001  (hydra wraps the import error in several ways)
            reason = " ".join(str(error.__cause__ or error).split())
            raise ConfigError(f"{prefix}._target_={target}: cannot be imported ({reason})") from None
        parameters = _logger_parameters(cls)
        if parameters is not None:
            receivers = f"{target} or wandb.init" if _is_wandb(cls) else target
            for key, value in values.items():
                if key not in parameters:
                    allowed = ", ".join(sorted(parameters))
                    raise ConfigError(f"{prefix}.{key}: not an argument of {receivers}; allowed: {allowed}")
                _check_logger_value(f"{prefix}.{key}", value, parameters[key])
        for key in FOLDER_KEYS:
            if values.get(key) is not None:
                _check_folder(f"{prefix}.{key}", values[key])


def _is_wandb(cls: type) -> bool:
    return any(base.__name__ == "WandbLogger" for base in cls.__mro__)


def _logger_parameters(cls: type) -> dict[str, Any] | None:
    """Argument name -> annotation (``Any`` when unknown); None when the class takes ``**kwargs`` we cannot list."""
    parameters = _annotated_parameters(cls)
    if parameters is None:
        return None
    open_ended = parameters.pop("**", False)
    if open_ended:
        if not _is_wandb(cls):
            return None  # the rest goes somewhere we cannot see: let the class judge it
        try:
            import wandb
        except ImportError:
            return None  # the logger's own construction reports the missing package
        extra = _annotated_parameters(wandb.init) or {}
        extra.pop("**", None)
        parameters = {**extra, **parameters}
    return parameters


def _annotated_parameters(function: Any) -> dict[str, Any] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(function.__init__ if isinstance(function, type) else function)
    except Exception:  # noqa: BLE001  (forward references to types only imported for checkers)
        hints = {}
    parameters: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            parameters["**"] = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and parameter.name != "self":
            annotation = hints.get(parameter.name, parameter.annotation)
            parameters[parameter.name] = Any if isinstance(annotation, str) else annotation
    return parameters


def _check_logger_value(path: str, value: Any, annotation: Any) -> None:
    if annotation is inspect.Parameter.empty or _check_type(value, annotation):
        return
    choices = _literal_choices(annotation)
    if choices:
        raise ConfigError(f"{path}={value!r}: allowed {', '.join(str(choice) for choice in choices)}")
    raise ConfigError(f"{path}={value!r}: expected {_describe(annotation)}")


def _literal_choices(annotation: Any) -> list[Any]:
    """The fixed values an annotation lists (``Literal['online', 'offline'] | None``: online, offline)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    args = typing.get_args(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if union and all(typing.get_origin(arg) is typing.Literal or arg is type(None) for arg in args):
        return [choice for arg in args for choice in _literal_choices(arg)]
    return []


def _describe(annotation: Any) -> str:
    """``a bool``, ``an integer``, ``a str or None``: the types a reader would type on the command line."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [_describe(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        none = type(None) in typing.get_args(annotation)
        return " or ".join(dict.fromkeys([*parts, *(["None"] if none else [])]))
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    if annotation is int:
        return "an integer"
    if annotation is Path or annotation is os.PathLike:
        return "a path"
    if isinstance(annotation, type):
        return f"a {annotation.__name__}"
    return str(annotation).replace("typing.", "")


def _check_folder(path: str, value: Any) -> None:
    """A folder a logger creates: it is one, or the nearest existing parent is a writable folder."""
    folder = Path(str(value)).expanduser()
    allowed = "expected a writable folder (created if missing)"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{path}={value}: a file, not a folder; {allowed}")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{path}={value}: {existing} is a file, not a folder; {allowed}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}={value}: {existing} is not writable; {allowed}")
