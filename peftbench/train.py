"""The entry point: compose -> validate -> seed -> data, model, method -> fit -> test -> result file.

``peftbench-train`` (or ``python -m peftbench.train``) is a Hydra app: every config group can be
switched on the command line and ``-m`` sweeps over them.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from peftbench import config as _config  # noqa: F401  (registers the config resolvers)
from peftbench import init_from, sweeps
from peftbench.errors import ConfigError
from peftbench.methods import Method
from peftbench.methods.build import build_method, build_regularizers, model_context
from peftbench.metrics import memory
from peftbench.metrics.budget import BudgetCounter
from peftbench.metrics.curve import LearningCurve, best_step
from peftbench.metrics.efficiency import EfficiencyMonitor
from peftbench.metrics.forgetting import ForgettingMonitor
from peftbench.metrics.inference import measure_inference
from peftbench.models.backbone import (
    ModelConfig,
    load_hf_config,
    load_model,
    load_tokenizer,
    model_fingerprint,
)
from peftbench.models.module import PeftBenchModule
from peftbench.resources import config_dir
from peftbench.results import (
    RunResult,
    compute_run_id,
    config_fingerprint,
    provenance,
    seed_interpolations,
    utc_now,
    write_result,
)
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.datamodule import TaskDataModule
from peftbench.tasks.generation import GenerationEvaluator, GenerationSpec
from peftbench.tasks.metrics import build_metrics

log = logging.getLogger("peftbench")


def generation_evaluator(task: TaskConfig, tokenizer: Any) -> GenerationEvaluator:
    return GenerationEvaluator(tokenizer, GenerationSpec.from_dict(task.generation))


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group like ``callbacks`` or ``logger`` (None entries skip)."""
    if not node:
        return []
    return [instantiate(value) for value in node.values() if value and value.get("_target_")]


def run(cfg: DictConfig) -> RunResult:
    """Train and evaluate one configuration; always leaves a result file (ok, failed, diverged or oom)."""
    started_at, clock = utc_now(), time.monotonic()
    run_id = compute_run_id(cfg)
    # --- sweeps: resume skips a finished sweep point (same run id, status ok) ---
    done = sweeps.finished_point(cfg, run_id)
    if done is not None:
        log.info("skipping %s: finished result %s (sweep.resume=false re-runs)", run_id, done.filename)
        return done
    # --- end sweeps ---
    output_dir = Path(cfg.paths.output_dir)
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        sweep_dir = str(Path(HydraConfig.get().sweep.dir).resolve())
    result = RunResult(
        run_id=run_id,
        task=cfg.task.name,
        model=cfg.model.name,
        method=cfg.method.name,
        seed=int(cfg.seed),
        study=cfg.get("study"),
        config=OmegaConf.to_container(cfg, resolve=True),
        started_at=started_at,
        output_dir=str(output_dir.resolve()),
        sweep_dir=sweep_dir,
        precision=str(cfg.trainer.get("precision")),
    )
    result.variant, result.search = sweeps.search_context()  # `trial` under a search sweeper
    result.provenance.update(sweeps.job_provenance())  # job number and overrides within a multirun
    # Validation happens before the try: a bad config is the user's to fix, not a failed run to record.
    task = TaskConfig.from_cfg(cfg.task)
    model_cfg = ModelConfig.from_cfg(cfg.model)
    method = build_method(cfg.method)
    build_regularizers(cfg)  # regularizer knobs too: a bad value is a config error, not a failed run
    sweeps.check_trainer(cfg)
    check_budget(cfg, task)
    check_selection(cfg, task)
    init_source = init_from.resolve(cfg)  # the earlier run to start from must exist before anything loads
    try:
        _train_and_test(cfg, task, model_cfg, method, result, init_source)
        result.status = "ok"
    except BaseException as error:  # BaseException: an interrupted run is `killed`, never a silent `ok`
        result.status = sweeps.failure_status(error)  # killed, failed, diverged or oom
        result.error = sweeps.describe_error(error)
        log.error("run %s:\n%s", result.status, traceback.format_exc())
        raise
    finally:
        result.ended_at = utc_now()
        result.budget["wall_time_s"] = time.monotonic() - clock
        accelerator = result.provenance.pop("accelerator", None)
        result.provenance = {**provenance(), **result.provenance}
        if accelerator is not None:
            result.provenance["device"]["accelerator"] = accelerator
        result.fingerprint = config_fingerprint(result, seed_interpolations(cfg))
        if rank_zero_only.rank == 0:  # under DDP every rank runs this; one result file per run
            path = write_result(result, cfg.paths.results_dir)
            result.provenance["result_path"] = str(path)
    return result


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
    """Selecting on the reported split is a paper's rule, allowed only where a reproduction asks for it."""
    if task.selection == "reported_split" and not cfg.get("reproduction"):
        raise ConfigError(
            "task.selection=reported_split: only paper reproductions (experiments/<paper>/ configs with a "
            "`reproduction:` block) may select on the reported split; allowed here: carved_validation"
        )


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
    cfg.task.val_every_n_steps = task.val_every_n_steps
    return {"epochs": int(task.epochs), "steps_per_epoch": steps_per_epoch, "max_steps": task.max_steps}


@dataclass
class PreparedRun:
    """Everything built for one run before training starts (tests and benchmarks reuse it)."""

    task: TaskConfig
    model_cfg: ModelConfig
    method: Method
    module: PeftBenchModule
    datamodule: TaskDataModule
    trainer: L.Trainer
    load_figures: dict[str, float]
    init_record: dict[str, Any] | None = None  # what init_from loaded, when set
    epoch_budget: dict[str, int] | None = None  # task.epochs turned into steps, when set


def prepare(
    cfg: DictConfig,
    task: TaskConfig | None = None,
    model_cfg: ModelConfig | None = None,
    method: Method | None = None,
    init_source: init_from.InitSource | None = None,
) -> PreparedRun:
    """Seed, load data, tokenizer and model, apply the method, build the module and the trainer."""
    task = task or TaskConfig.from_cfg(cfg.task)
    model_cfg = model_cfg or ModelConfig.from_cfg(cfg.model)
    method = method or build_method(cfg.method)
    regularizers = build_regularizers(cfg)  # checked before any weights load
    memory.reset_peak()
    L.seed_everything(int(cfg.seed), workers=True)

    # Cheap checks first: architecture config, tokenizer and data come before any weights load.
    hf_config = load_hf_config(model_cfg, task.num_labels)
    context = model_context(model_cfg, task, hf_config)
    method.validate(context)
    if task.max_length > model_cfg.max_positions:
        raise ConfigError(
            f"task.max_length={task.max_length}: model {model_cfg.name} allows at most "
            f"{model_cfg.max_positions}"
        )
    metrics = build_metrics(task.metrics, task.num_labels)  # an unloadable `evaluate` metric stops here
    tokenizer = load_tokenizer(model_cfg)
    datamodule = TaskDataModule(task, tokenizer, seed=int(cfg.seed))
    datamodule.setup()
    epoch_budget = None
    if task.epochs is not None:
        epoch_budget = derive_epoch_budget(cfg, task, datamodule.split_sizes()["train"])

    generative = task.type == "generation"
    model, new_weights = load_model(model_cfg, hf_config, tokenizer.pad_token_id, generative=generative)
    stray = sorted({n.rsplit(".", 1)[0] for n in new_weights} - set(context.head_modules))
    if stray:  # freshly initialised weights outside the head would stay random under most methods
        log.warning("weights initialised from scratch outside model.head_modules: %s", stray)
    load_figures = memory.peak_mb()
    model = method.apply(model, context)
    init_record = (
        init_from.load_into(model, init_source, context.head_modules, method) if init_source else None
    )

    optimizer_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    weight_decay = float(optimizer_cfg.pop("weight_decay", 0.0))
    module = PeftBenchModule(
        model=model,
        method=method,
        metrics=metrics,
        optimizer_factory=instantiate(optimizer_cfg, _partial_=True),
        weight_decay=weight_decay,
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        regularizers=regularizers,
        task_type=task.type,
        test_postfixes=task.test_postfixes,
        generator=generation_evaluator(task, tokenizer) if generative else None,
    )
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    if not loggers:  # Lightning refuses a learning-rate monitor with nothing to log to (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return PreparedRun(
        task, model_cfg, method, module, datamodule, trainer, load_figures, init_record, epoch_budget
    )


def _train_and_test(
    cfg: DictConfig,
    task: TaskConfig,
    model_cfg: ModelConfig,
    method: Method,
    result: RunResult,
    init_source: init_from.InitSource | None = None,
) -> None:
    prepared = prepare(cfg, task, model_cfg, method, init_source)
    module, datamodule, trainer = prepared.module, prepared.datamodule, prepared.trainer
    result.data = {"split_seed": task.split_seed, "sizes": datamodule.split_sizes()}
    if prepared.init_record is not None:
        result.provenance["init_from"] = prepared.init_record
    if prepared.epoch_budget is not None:  # the derived steps, where the recorded config said only epochs
        result.budget.update(prepared.epoch_budget)
        for section in ("task", "trainer"):
            result.config[section]["max_steps"] = task.max_steps
        result.config["task"]["val_every_n_steps"] = task.val_every_n_steps
        result.config["trainer"]["val_check_interval"] = task.val_every_n_steps
    trainer.fit(module, datamodule=datamodule)
    result.provenance["accelerator"] = (
        trainer.strategy.root_device.type
    )  # cpu, cuda, mps: part of a row's key

    efficiency = next((c for c in trainer.callbacks if isinstance(c, EfficiencyMonitor)), None)
    forgetting = next((c for c in trainer.callbacks if isinstance(c, ForgettingMonitor)), None)
    if forgetting is not None:  # callbacks=forgetting: the before/after reference evaluation
        result.reference = dict(forgetting.figures)
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
    result.val_best = _val_best(trainer, checkpoint)
    if cfg.run_test:
        result.test_last = _test(trainer, module, datamodule)
        if best_path:
            result.test = _test(trainer, module, datamodule, ckpt_path=best_path)
        else:  # no checkpointing (fast_dev_run): the last weights are all there is
            result.test = dict(result.test_last)
        # The chosen checkpoint's predictions: the test pass that ran last.
        result.predictions = _complete_predictions(module.test_predictions, datamodule.split_sizes())
    curve = next((c for c in trainer.callbacks if isinstance(c, LearningCurve)), None)
    result.curve = list(curve.curve) if curve is not None else []
    result.selection = {
        "monitor": task.monitor,
        "mode": task.monitor_mode,
        # best_validation: a split carved from train; reported_split: the paper's own rule (flagged in reports)
        "rule": "reported_split" if task.selection == "reported_split" else "best_validation",
        "best_checkpoint": best_path or None,
        "chosen": "best" if best_path else "last",
        "best_step": best_step(result.curve, task.monitor, task.monitor_mode) if best_path else None,
        "global_steps": trainer.global_step,
    }

    budget = next((c for c in trainer.callbacks if isinstance(c, BudgetCounter)), None)
    if budget is not None:
        result.budget.update(budget.figures)
    result.budget.update(max_steps=int(task.max_steps), batch_size=int(task.batch_size))
    figures = dict(efficiency.figures) if efficiency else {}
    figures["peak_mem_load_rss_mb"] = prepared.load_figures["peak_rss_mb"]
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights_path = output_dir / "trainable.safetensors"
    weights = {
        name: tensor.contiguous().cpu() for name, tensor in method.trainable_state_dict(module.model).items()
    }
    save_file(weights, str(weights_path))
    result.provenance["trainable_weights"] = str(weights_path.resolve())  # what init_from= loads
    figures["trainable_disk_mb"] = weights_path.stat().st_size / 2**20
    if prepared.load_figures.get("peak_cuda_allocated_mb") is not None:
        figures["peak_mem_load_cuda_allocated_mb"] = prepared.load_figures["peak_cuda_allocated_mb"]
    # Last: merging for the inference figures may consume the trained model (weights are saved above).
    inference_cfg = cfg.get("inference") or {}
    if inference_cfg.get("enabled", True):
        figures.update(
            measure_inference(module, datamodule, trainer, method, inference_cfg.get("max_batches", 20))
        )
    result.efficiency = figures
    result.provenance["model"] = model_fingerprint(model_cfg)


def _test(
    trainer: L.Trainer, module: PeftBenchModule, datamodule: TaskDataModule, **kwargs: Any
) -> dict[str, float]:
    """Test metrics of every reported split in one dict (trainer.test returns one dict per split)."""
    per_split = trainer.test(module, datamodule=datamodule, verbose=False, **kwargs)
    return _floats({key: value for metrics in per_split for key, value in metrics.items()})


def _complete_predictions(
    predictions: dict[str, dict[str, list]], sizes: dict[str, int]
) -> dict[str, dict[str, list]]:
    """A record that misses rows (``trainer.limit_test_batches``) keeps its ``index`` and says ``partial``:
    only complete records pair example by example with other runs."""
    out = {}
    for split, record in predictions.items():
        record = dict(record)
        if len(record["pred"]) != sizes.get(split, len(record["pred"])):
            record.setdefault("index", list(range(len(record["pred"]))))
            record["partial"] = True
        out[split] = record
    return out


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _val_best(trainer: L.Trainer, checkpoint: Any) -> dict[str, float]:
    if checkpoint is None or getattr(checkpoint, "best_model_score", None) is None:
        return {}
    return {checkpoint.monitor: float(checkpoint.best_model_score)}


def print_summary(result: RunResult) -> None:
    eff = result.efficiency
    headline = result.config["task"]["headline"]
    score = result.test.get(f"test/{headline}")
    print(
        f"\n{result.method} on {result.task} ({result.model}): trainable {eff.get('trainable_params', 0):,} "
        f"({eff.get('trainable_ratio_pct', float('nan')):.3f} %), test {headline} "
        f"{'n/a' if score is None else f'{score:.4f}'}, {eff.get('train_samples_per_s', float('nan')):.1f} samples/s, "
        f"peak {eff.get('peak_mem_mb', float('nan')):.0f} MiB, train {eff.get('train_time_s', float('nan')):.0f} s\n"
        f"result: {result.provenance.get('result_path')}"
    )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        result = run(cfg)
    except Exception as error:
        if not sweeps.keep_going(cfg):
            raise
        # The sweep goes on; the failure is in the results folder (status and error). A sweeper reads
        # NaN as a failed trial.
        if isinstance(error, ConfigError):  # raised before run() could record anything
            sweeps.record_failure(cfg, "failed", f"ConfigError: {error}")
        log.error("job failed, sweep goes on: %s: %s", type(error).__name__, error)
        return math.nan
    if cfg.get("print_summary", True):
        print_summary(result)
    return sweeps.objective(result)


if __name__ == "__main__":
    main()
