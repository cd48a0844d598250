"""Where a run is built: the one assembly path that training, export, init_from, the benches and the tests use.

Two steps, so that everything checkable is checked before anything heavy happens:

1. ``parts(cfg)``: the typed task and model configs, the method and the regularizers; ``check_trainable``
   adds the checks training needs (trainer, budget, selection rule). A bad value stops here with one line.
2. ``assemble(cfg, parts)``: seed, the architecture config, metrics, callbacks and loggers, tokenizer and
   data, the trainer, then the checks on a weightless skeleton (head modules, the method's dry run); only
   then the weights with the method applied (``load_transformed``), ``init_from`` weights and the module.

``peftbench-export`` rebuilds a finished run's model with ``model_spec`` + ``load_transformed``, the same code
that built it for training, so what is exported is what was trained (generation runs included).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench import init_from, quiet, sweeps
from peftbench.errors import ConfigError
from peftbench.loggers import log_run_config
from peftbench.methods import Method, ModelContext, TrainingHooks
from peftbench.methods.base import meta_skeleton
from peftbench.methods.build import build_method, build_regularizers, model_context
from peftbench.metrics import memory
from peftbench.models.backbone import ModelConfig, load_hf_config, load_model, load_tokenizer
from peftbench.models.module import PeftBenchModule
from peftbench.run_config import check_run_config
from peftbench.signatures import refusal
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.datamodule import TaskDataModule
from peftbench.tasks.metrics import build_metrics

log = logging.getLogger("peftbench")


# --- 1. parts: typed configs and config-only checks ------------------------------------------------------
@dataclass
class RunParts:
    """What a config names, built and validated; nothing loaded yet."""

    task: TaskConfig
    model_cfg: ModelConfig
    method: Method
    regularizers: list[TrainingHooks]


def parts(cfg: DictConfig, method: Method | None = None) -> RunParts:
    """The task, model, method and regularizers of ``cfg``, typed and validated (nothing loads).

    ``method`` replaces the configured one (tests hand in an instance they inspect).
    """
    task = TaskConfig.from_cfg(cfg.task)
    inferred = task.kind.infer_labels(task)  # your own file without label names: its classes, read from it
    if inferred is not None:
        with open_dict(cfg.task):  # recorded in the result's config like any label setting
            for key, value in inferred.items():
                cfg.task[key] = value
        log.info("task %s: classes read from the train split: %s", task.name, inferred["label_names"])
    model_cfg = ModelConfig.from_cfg(cfg.model)
    return RunParts(task, model_cfg, method or build_method(cfg.method), build_regularizers(cfg))


def check_trainable(cfg: DictConfig, run: RunParts) -> None:
    """What training needs beyond the parts: typed run-level knobs (trainer, optimizer on a stand-in, schedule,
    seed, inference), a trainer this machine runs, one step budget, a fair selection."""
    check_run_config(cfg)
    sweeps.check_trainer(cfg)
    check_budget(cfg, run.task)
    check_selection(cfg, run.task)


def check_budget(cfg: DictConfig, task: TaskConfig) -> None:
    """One step budget: ``task.max_steps``, shared by every method. The trainer reads it by interpolation; a
    trainer value set apart from it would train another budget than the result and the leaderboard report."""
    trainer_steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    if task.epochs is None and trainer_steps is not None and trainer_steps != task.max_steps:
        raise ConfigError(
            f"trainer.max_steps={trainer_steps}: the step budget is task.max_steps ({task.max_steps}), which "
            f"the trainer follows; set task.max_steps={trainer_steps} instead"
        )


def check_selection(cfg: DictConfig, task: TaskConfig) -> None:
    """Selecting on the reported split is a paper's rule, allowed only where a reproduction asks for it; a
    checkpoint callback monitors a metric the module logs (Lightning would just never save, and the run would
    test its last weights and say ok)."""
    if task.selection == "reported_split" and not cfg.get("reproduction"):
        raise ConfigError(
            "task.selection=reported_split: only paper reproductions (experiments/<paper>/ configs with a "
            "`reproduction:` block) may select on the reported split; allowed here: carved_validation"
        )
    logged = ["val/loss", *(f"val/{name}" for name in task.metrics)]
    for name, entry in (cfg.get("callbacks") or {}).items():
        if not entry or not entry.get("_target_") or entry.get("monitor") is None:
            continue
        cls = get_class(str(entry["_target_"]))
        if isinstance(cls, type) and issubclass(cls, ModelCheckpoint) and entry.monitor not in logged:
            raise ConfigError(
                f"callbacks.{name}.monitor={entry.monitor}: not a metric this run logs; allowed "
                f"{', '.join(logged)} (task.monitor sets it for every callback)"
            )


# --- 2. the model: architecture checks, then weights with the method applied ----------------------------
@dataclass
class ModelSpec:
    """The architecture and what methods see of it, checked before any weights load."""

    hf_config: Any
    context: ModelContext


def model_spec(run: RunParts) -> ModelSpec:
    """The transformers config, the methods' context, and the checks that need only them."""
    if run.task.max_length > run.model_cfg.max_positions:
        raise ConfigError(
            f"task.max_length={run.task.max_length}: model {run.model_cfg.name} allows at most "
            f"{run.model_cfg.max_positions} (model.max_positions)"
        )
    hf_config = load_hf_config(run.model_cfg, run.task.num_labels, run.task.kind.problem_type)
    context = model_context(run.model_cfg, run.task, hf_config)
    return ModelSpec(hf_config, context)


def check_head_lr(cfg: DictConfig, context: ModelContext) -> None:
    """``optimizer.head_lr`` needs a new task head to apply to; a causal-LM task trains none (its LM head is the
    pretrained one), and the knob would be ignored unseen."""
    head_lr = OmegaConf.select(cfg, "optimizer.head_lr", default=None)
    if head_lr is not None and not context.head_modules:
        raise ConfigError(
            f"optimizer.head_lr={head_lr}: this task trains no new head (generation tasks keep the pretrained LM "
            "head); allowed here: null"
        )


def check_architecture(run: RunParts, spec: ModelSpec) -> None:
    """The checks that need the architecture itself, on a weightless (meta-device) skeleton: the head modules
    exist, and the method's dry run (peft's own target matching) succeeds. Last before the weights load: every
    cheaper check (data, callbacks, trainer) has had its say."""
    check_head_modules(run.model_cfg, spec.context)
    run.method.validate(spec.context)


def check_head_modules(model_cfg: ModelConfig, context: ModelContext) -> None:
    """``model.head_modules`` name modules of the model the task builds; a name that matches nothing would
    leave the new head frozen at its random init under most methods, and the run would still say ok."""
    if not context.head_modules or context.hf_config is None or context.auto_model_class is None:
        return
    try:
        skeleton = meta_skeleton(context)
    except Exception as error:  # noqa: BLE001  (an architecture only its real loader builds: judged there)
        log.debug("no meta-device skeleton of %s (%s): head modules checked at load", model_cfg.name, error)
        return
    names = {name for name, _ in skeleton.named_modules()}
    missing = [name for name in context.head_modules if name not in names]
    if missing:
        top = sorted(name for name in names if name and "." not in name)
        raise ConfigError(
            f"model.head_modules={list(model_cfg.head_modules)}: no module {missing[0]} in "
            f"{type(skeleton).__name__}; its top-level modules: {', '.join(top)}"
        )


def load_transformed(
    run: RunParts,
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase,
    train_batches: Callable[[], Iterable[dict[str, Any]]] | None = None,
) -> nn.Module:
    """The pretrained weights (with a causal-LM head for generation tasks) and the method applied to them.

    ``train_batches`` (a fresh training loader each call) reaches the method as ``context.train_batches``, for
    inits that need a pass over data (EVA, CorDA); methods that do not ask for it never draw a batch."""
    generative = run.task.type == "generation"
    model, new_weights = load_model(
        run.model_cfg, spec.hf_config, tokenizer.pad_token_id, generative=generative
    )
    stray = sorted({n.rsplit(".", 1)[0] for n in new_weights} - set(spec.context.head_modules))
    if stray:  # freshly initialised weights outside the head would stay random under most methods
        log.warning("weights initialised from scratch outside model.head_modules: %s", stray)
    return run.method.apply(model, dataclasses.replace(spec.context, train_batches=train_batches))


# --- 3. the whole run -------------------------------------------------------------------------------------
@dataclass
class PreparedRun:
    """Everything built for one run before training starts (training, tests and benchmarks use it)."""

    task: TaskConfig
    model_cfg: ModelConfig
    method: Method
    module: PeftBenchModule
    datamodule: TaskDataModule
    trainer: L.Trainer
    load_figures: dict[str, float]  # peak memory while loading (before the method's own training state)
    init_record: dict[str, Any] | None = None  # what init_from loaded, when set
    epoch_budget: dict[str, int] | None = None  # task.epochs turned into steps, when set


def assemble(
    cfg: DictConfig,
    run: RunParts | None = None,
    init_source: init_from.InitSource | None = None,
    method: Method | None = None,
) -> PreparedRun:
    """Seed, check the architecture, load data and tokenizer, then the model with the method applied, and build
    the module, callbacks, loggers and trainer. ``run`` (from ``parts``) avoids building the parts twice."""
    quiet.install()  # first: what the libraries say about their own internals stays off the console
    if run is None:
        run = parts(cfg, method)
        check_trainable(cfg, run)
    task = run.task
    memory.reset_peak()
    L.seed_everything(int(cfg.seed), workers=True)

    # Cheap first: architecture config, metrics, callbacks and loggers, tokenizer, data, trainer, then the
    # checks on a weightless skeleton, and only then the weights.
    spec = model_spec(run)
    metrics = build_metrics(task.metrics, task.num_labels)  # an unloadable `evaluate` metric stops here
    callbacks, loggers = run_components(cfg)  # each refuses a bad value of its own here
    tokenizer = load_tokenizer(run.model_cfg)
    datamodule = TaskDataModule(task, tokenizer, seed=int(cfg.seed))
    datamodule.setup()
    epoch_budget = None
    if task.epochs is not None:
        epoch_budget = derive_epoch_budget(cfg, task, datamodule.split_sizes()["train"])

    trainer = build_trainer(cfg, callbacks, loggers)  # after the epoch budget: it sets max_steps
    check_head_lr(cfg, spec.context)
    check_architecture(run, spec)

    model = load_transformed(run, spec, tokenizer, datamodule.train_dataloader)
    load_figures = memory.peak_mb()
    init_record = (
        init_from.load_into(model, init_source, spec.context.head_modules, run.method)
        if init_source
        else None
    )
    module = build_module(cfg, run, model, metrics, tokenizer)
    log_run_config(cfg, trainer.loggers)  # last: the config is final (epoch budget) and everything has loaded
    return PreparedRun(
        task, run.model_cfg, run.method, module, datamodule, trainer, load_figures, init_record, epoch_budget
    )


def run_components(cfg: DictConfig) -> tuple[list[Any], list[Any]]:
    """The configured callbacks and loggers."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:  # Lightning refuses a learning-rate monitor with nothing to log to (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks, loggers


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]) -> L.Trainer:
    """The Lightning Trainer around the run's callbacks and loggers."""
    try:
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as error:  # Lightning's own checks of its arguments, blamed on the key
        values = OmegaConf.to_container(cfg.trainer, resolve=True)
        raise refusal("trainer", str(values.get("_target_")), values, error.__cause__ or error) from None


def build_module(
    cfg: DictConfig, run: RunParts, model: nn.Module, metrics: Any, tokenizer: PreTrainedTokenizerBase
) -> PeftBenchModule:
    """The one LightningModule: the model, its hooks, the optimizer factory and schedule, the task's metrics."""
    optimizer_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    weight_decay = float(optimizer_cfg.pop("weight_decay", 0.0))
    head_lr = optimizer_cfg.pop("head_lr", None)
    optimizer_cfg["lr"] = float(optimizer_cfg["lr"]) * float(optimizer_cfg.pop("lr_factor", 1.0))
    return PeftBenchModule(
        model=model,
        method=run.method,
        metrics=metrics,
        optimizer_factory=instantiate(optimizer_cfg, _partial_=True),
        weight_decay=weight_decay,
        head_lr=None if head_lr is None else float(head_lr),
        head_modules=run.task.kind.head_modules(list(run.model_cfg.head_modules)),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        regularizers=run.regularizers,
        task_type=run.task.type,
        test_postfixes=run.task.test_postfixes,
        predictor=run.task.kind.predictor(run.task, tokenizer),  # class ids, values, or decoded answers
    )


def instantiate_group(node: DictConfig | None, group: str = "callbacks") -> list[Any]:
    """Instantiate every ``_target_`` entry of a group like ``callbacks`` or ``logger`` (None entries skip).

    A component that refuses its arguments (its own ConfigError, or a TypeError for an unknown one) stops the
    run with one line naming ``<group>.<entry>``."""
    built = []
    for name, value in (node or {}).items():
        if not value or not value.get("_target_"):
            continue
        try:
            built.append(instantiate(value))
        except InstantiationException as error:
            cause = error.__cause__ or error
            text = " ".join(str(cause).split())
            prefix = f"{group}.{name}"
            if isinstance(
                cause, ConfigError
            ):  # "check_every=0: must be >= 1" -> callbacks.budget.check_every=0
                raise ConfigError(text if text.startswith(f"{prefix}.") else f"{prefix}.{text}") from None
            values = OmegaConf.to_container(value, resolve=True)
            raise refusal(prefix, str(values.get("_target_")), values, cause) from None
    return built


def derive_epoch_budget(cfg: DictConfig, task: TaskConfig, train_rows: int) -> dict[str, int]:
    """``task.epochs``: the step budget that covers that many epochs, validating once per epoch.

    Papers state budgets in epochs; the loop counts optimizer steps (every method the same budget), so
    the epochs become steps once the train split's size is known. Written back into the config, so the
    trainer, the scheduler and the result all see the derived numbers.
    """
    accumulate = int(OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1)
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    world = int(devices) if isinstance(devices, int) and devices > 0 else 1
    batches_per_epoch = math.ceil(train_rows / (task.batch_size * world))
    steps_per_epoch = math.ceil(batches_per_epoch / accumulate)
    task.max_steps = int(task.epochs) * steps_per_epoch
    task.val_every_n_steps = batches_per_epoch  # Lightning counts batches: the end of every epoch
    cfg.task.max_steps = task.max_steps
    cfg.task.val_every_n_steps = task.val_every_n_steps  # the trainer's keys interpolate these two
    return {"epochs": int(task.epochs), "steps_per_epoch": steps_per_epoch, "max_steps": task.max_steps}
