"""Typed checks of the run-level config groups, applied before anything loads.

The task, the model and the method are typed configs of their own. What remains is the knobs that Lightning,
torch and transformers would only reject mid-run, or never: ``trainer.accumulate_grad_batches=0`` divides by
zero after training has started, a negative ``optimizer.weight_decay`` or ``scheduler.warmup_ratio=2.0``
train without complaint, ``seed=1.5`` silently becomes seed 1 under a new run id. Each group here is a
``Knobs`` dataclass of the keys peftbench relies on (other keys of the group pass through to the library,
which is then exercised on a stand-in: the optimizer and the schedule are built on one dummy parameter), so
every bad value stops with one line, ``<key>=<value>: <what is allowed>``.

Groups whose entries name a class (``_target_``: the trainer, each callback and logger, the optimizer) are
checked against that class's signature (peftbench/signatures.py): unknown keys, annotated types and literal
choices, documented floors of count arguments. Lightning's classes take most arguments lazily, when they are
first used, i.e. mid-training. The model's weights source must exist on this machine (``model.name_or_path``: a
local folder with a config.json, an installed ``pkg:`` package), and the ``paths`` must be folders.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from peftbench.config import dataclass_from_cfg
from peftbench.errors import ConfigError
from peftbench.knobs import Knobs, knob
from peftbench.models.backbone import ModelConfig, check_weights_source
from peftbench.signatures import check_arguments, own_parameters, parameters_of, refusal

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
    study: str | None = knob(None, help="name of the study this run belongs to")


@dataclass
class SweepKnobs(Knobs):
    """conf/train.yaml's ``sweep:`` block (every key: a typo here would silently keep the default)."""

    PREFIX: ClassVar[str] = "sweep"

    resume: bool = knob(True, help="skip a sweep point whose result exists with status ok")
    keep_going: bool = knob(True, help="a failed job records its status and the sweep goes on")
    search: list[str] = knob(
        default_factory=list,
        help="keys this multirun searches over as a grid (e.g. [optimizer.lr_factor]): its jobs are trials, "
        "chosen by validation score; empty: an ordinary sweep",
    )
    search_seed: int = knob(0, help="the seed the search's trials ran at (what peftbench.chosen reads)", ge=0)
    transfer: list[str] = knob(
        default_factory=list,
        help="keys that may differ from the search's config when a later stage takes its choice (e.g. "
        "[task.max_steps]: the choice made at one budget, run at another); empty: everything must match",
    )


@dataclass
class InferenceKnobs(Knobs):
    """The ``inference:`` block (every key: it is read by peftbench alone)."""

    PREFIX: ClassVar[str] = "inference"

    enabled: bool = knob(True, help="time inference after training (unmerged and merged)")
    max_batches: int = knob(20, help="test batches timed per variant (the first is untimed warm-up)", ge=1)


# Keys of the optimizer group that peftbench reads itself instead of passing them to the optimizer class.
PEFTBENCH_OPTIMIZER_KEYS = ("weight_decay", "head_lr", "lr_factor")


@dataclass
class OptimizerKnobs(Knobs):
    """The hyperparameters every optimizer peftbench ships takes (others pass through to its class)."""

    PREFIX: ClassVar[str] = "optimizer"

    lr: float = knob(2e-5, help="learning rate", gt=0)
    head_lr: float | None = knob(
        None, help="learning rate of the task head's parameters; null: the head follows lr", gt=0
    )
    lr_factor: float = knob(
        1.0, help="multiplies lr (not head_lr): a search centred on a method's own lr sweeps this", gt=0
    )
    weight_decay: float = knob(0.0, help="decoupled weight decay for matrices", ge=0)
    eps: float = knob(1e-8, help="numerical floor in the denominator", gt=0)


@dataclass
class SchedulerKnobs(Knobs):
    """The ``scheduler:`` group (every key: the module reads these two and nothing else)."""

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


def _block(cfg: DictConfig, key: str, cls: type[Knobs]) -> dict[str, Any]:
    """A block peftbench alone reads, whole: null or a scalar is refused (its defaults would apply unseen)."""
    node = cfg.get(key)
    if not isinstance(node, DictConfig):
        allowed = ", ".join(field.name for field in dataclasses.fields(cls))
        raise ConfigError(f"{key}={node!r}: expected a block with the keys {allowed}")
    return OmegaConf.to_container(node, resolve=True)


def check_run_config(cfg: DictConfig) -> None:
    """Every run-level knob typed and in range, the optimizer and schedule built on a stand-in parameter, and
    the trainer, callbacks and loggers checked against the signatures that will receive them."""
    dataclass_from_cfg(RunKnobs, _known(RunKnobs, cfg), "")
    dataclass_from_cfg(SweepKnobs, _block(cfg, "sweep", SweepKnobs), "sweep")
    dataclass_from_cfg(InferenceKnobs, _block(cfg, "inference", InferenceKnobs), "inference")
    dataclass_from_cfg(TrainerKnobs, _known(TrainerKnobs, cfg.trainer), "trainer")
    check_trainer(cfg.trainer)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    dataclass_from_cfg(OptimizerKnobs, _known(OptimizerKnobs, optimizer), "optimizer")
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    dataclass_from_cfg(SchedulerKnobs, scheduler, "scheduler")
    stand_in = _stand_in_optimizer(optimizer, scheduler)
    _check_clipping(cfg, stand_in)
    check_paths(cfg.paths)
    check_weights_source(ModelConfig.from_cfg(cfg.model))
    check_callbacks(cfg.get("callbacks"))
    check_loggers(cfg.get("logger"))


def _check_clipping(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer that unscales gradients inside its own step (torch's ``fused=True``) cannot have them
    clipped under mixed precision: Lightning refuses at the first step, i.e. after the model has loaded."""
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
    precision = str(OmegaConf.select(cfg, "trainer.precision", default=""))
    if getattr(optimizer, "_step_supports_amp_scaling", False) and clip and "mixed" in precision:
        raise ConfigError(
            f"optimizer.fused={optimizer.defaults.get('fused')}: this optimizer unscales gradients in its own "
            f"step, which Lightning cannot clip under trainer.precision={precision}; set trainer.gradient_clip_val"
            "=null, a non-mixed precision, or optimizer.foreach=true instead"
        )


def _stand_in_optimizer(
    optimizer_cfg: dict[str, Any], scheduler_cfg: dict[str, Any]
) -> torch.optim.Optimizer:
    """Check the optimizer's arguments against its class, then build it (and its schedule) on one dummy
    parameter: an unknown argument or a value the class refuses shows up now, naming the key, not after the
    model has loaded."""
    from transformers import get_scheduler

    # weight_decay is given per parameter group, head_lr read by the module: neither reaches the class.
    arguments = {k: v for k, v in optimizer_cfg.items() if k not in PEFTBENCH_OPTIMIZER_KEYS}
    target = arguments.get("_target_")
    cls = _import("optimizer", str(target))
    check_arguments("optimizer", arguments, parameters_of(cls), str(target), skip=("params",))
    parameter = torch.nn.Parameter(torch.zeros(1))
    values = {k: v for k, v in arguments.items() if k != "_target_"}
    group = {"params": [parameter], "weight_decay": optimizer_cfg.get("weight_decay", 0.0)}
    try:
        optimizer = cls([group], **values)
    except Exception as error:  # noqa: BLE001  (torch's own range checks: "Invalid beta parameter at index 0")
        raise refusal("optimizer", str(target), values, error) from None
    try:
        get_scheduler(
            scheduler_cfg.get("name", "linear"), optimizer, num_warmup_steps=0, num_training_steps=10
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler.name={scheduler_cfg.get('name')}: {error}") from None
    return optimizer


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
    for prefix, target, values in _entries(node, "logger"):
        cls = _import(prefix, target)
        parameters = _logger_parameters(cls)
        receivers = f"{target} or wandb.init" if _is_wandb(cls) else target
        check_arguments(prefix, values, parameters, receivers)
        for key in FOLDER_KEYS:
            if values.get(key) is not None:
                check_folder(f"{prefix}.{key}", values[key])


def check_callbacks(node: DictConfig | None) -> None:
    """Every ``callbacks.<name>`` entry against its class's signature (Lightning's own callbacks take
    ``refresh_rate=-1`` or an unknown key's typo without a word); peftbench's callbacks check their own values
    on construction, which comes before any weights load too."""
    for prefix, target, values in _entries(node, "callbacks"):
        check_arguments(prefix, values, parameters_of(_import(prefix, target)), target)


def _entries(node: DictConfig | None, group: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(group.name, _target_, the other keys)`` of each entry of a group that names a class (null entries,
    e.g. ``callbacks.progress_bar=null``, are switched off)."""
    entries = []
    for name, entry in (node or {}).items():
        if entry and entry.get("_target_"):
            values = OmegaConf.to_container(entry, resolve=True)
            entries.append((f"{group}.{name}", str(values.pop("_target_")), values))
    return entries


def check_trainer(node: DictConfig) -> None:
    """``trainer.*`` against the Trainer class's signature: ``deterministic=maybe`` or ``precision=17`` are
    refused now, naming the allowed values (Lightning reads some of them only when fit starts)."""
    values = OmegaConf.to_container(node, resolve=True)
    target = values.pop("_target_", "lightning.pytorch.Trainer")
    cls = _import("trainer", target)
    check_arguments("trainer", values, parameters_of(cls), target, skip=("callbacks", "logger"))


def _import(prefix: str, target: str) -> Any:
    try:
        return get_class(target)
    except Exception as error:  # noqa: BLE001  (hydra wraps the import error in several ways)
        reason = " ".join(str(error.__cause__ or error).split())
        raise ConfigError(f"{prefix}._target_={target}: cannot be imported ({reason})") from None


def _is_wandb(cls: type) -> bool:
    return any(base.__name__ == "WandbLogger" for base in cls.__mro__)


def _logger_parameters(cls: type) -> dict[str, Any] | None:
    """Argument name -> annotation; a WandbLogger's ``**kwargs`` go to ``wandb.init``, whose arguments join."""
    parameters = parameters_of(cls)
    if parameters is not None or not _is_wandb(cls):
        return parameters
    try:
        import wandb
    except ImportError:
        return None  # the logger's own construction reports the missing package
    return {**own_parameters(wandb.init), **own_parameters(cls.__init__)}


def check_paths(node: DictConfig) -> None:
    """``paths.*``: each is a folder that is (or can become) one; an empty value would write into the launch
    directory, next to the code."""
    for key in ("results_dir", "output_dir", "data_dir"):
        value = OmegaConf.select(node, key, default=None)
        if value is None:
            continue
        if not str(value).strip():
            raise ConfigError(f"paths.{key}={value!r}: expected a folder path (created if missing)")
        if key == "output_dir":  # results_dir is probed by a write just before the run starts
            check_folder(f"paths.{key}", value)
        elif key == "data_dir" and Path(str(value)).expanduser().is_file():
            raise ConfigError(
                f"paths.{key}={value}: a file, not a folder; expected the offline assets folder"
            )


def check_folder(path: str, value: Any) -> None:
    """A folder a run creates: it is one, or the nearest existing parent is a writable folder."""
    folder = Path(str(value)).expanduser()
    allowed = "expected a writable folder (created if missing)"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{path}={value}: a file, not a folder; {allowed}")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{path}={value}: {existing} is a file, not a folder; {allowed}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}={value}: {existing} is not writable; {allowed}")
