"""The entry point: compose -> validate -> assemble (peftbench/assemble.py) -> fit -> test -> result file.

``peftbench-train`` (or ``python -m peftbench.train``) is a Hydra app: every config group can be
switched on the command line and ``-m`` sweeps over them.

Exit codes: 0 ok; 1 a run that failed (or a sweep with any job that did not finish ok, one summary line
each on stderr); 2 a config error (one line ``peftbench-train: <key>=<value>: <what is allowed>``, no
traceback unless ``PEFTBENCH_TRACEBACK=1`` or ``HYDRA_FULL_ERROR=1``), Hydra's own composition errors
included (peftbench/hydra_errors.py); 128 + N stopped by signal N (143: SIGTERM, 130: Ctrl-C), recorded
``killed``. A failed single run prints its traceback once (the log) and one ``run failed:`` line.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from peftbench import config as _config  # noqa: F401  (registers the config resolvers)
from peftbench import console, hydra_errors, sweeps
from peftbench.console import entry_point
from peftbench.errors import ConfigError, Interrupted
from peftbench.imports import gate_bitsandbytes
from peftbench.resources import config_dir
from peftbench.results import (
    WEIGHTS_FILE,
    Reporter,
    ResultWriteError,
    RunResult,
    compute_run_id,
    config_fingerprint,
    provenance,
    seed_interpolations,
    utc_now,
    write_result,
)

if TYPE_CHECKING:
    import lightning as L

    from peftbench.assemble import PreparedRun
    from peftbench.models.module import PeftBenchModule
    from peftbench.tasks.datamodule import TaskDataModule

log = logging.getLogger("peftbench")
# Nothing heavy (torch, Lightning, transformers, peft) is imported at module level: `peftbench-train --help`,
# `--cfg job` and tab completion compose configs only (bench/startup.py times them). A run imports them when
# it starts (`assemble` below); the bitsandbytes gate (peftbench/imports.py) comes first.


def __getattr__(name: str) -> Any:
    """``peftbench.train.assemble``: the assembly module, imported on first use (tests patch through it)."""
    if name == "assemble":
        from peftbench import assemble

        return assemble
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(cfg: DictConfig) -> RunResult:
    """Train and evaluate one configuration; always leaves a result file (ok, failed, diverged or oom).

    compose (Hydra) -> resume check -> parts (validated, nothing loaded) -> assemble -> fit -> test ->
    every component reports its section -> write.
    """
    from lightning.pytorch.utilities import rank_zero_only

    from peftbench import assemble, init_from
    from peftbench.search import resolve_choices

    started_at, clock = utc_now(), time.monotonic()
    resolve_choices(cfg)  # a report stage's ${peftbench.chosen:...}: a missing search stops here, one line
    run_id = compute_run_id(cfg)
    done = sweeps.finished_point(cfg, run_id)  # a resumed sweep skips a finished point
    if done is not None:
        log.info("skipping %s: finished result %s (sweep.resume=false re-runs)", run_id, done.filename)
        return done
    # Validation happens before the result exists: a bad config is the user's to fix, not a failed run.
    run_parts = assemble.parts(cfg)
    assemble.check_trainable(cfg, run_parts)
    init_source = init_from.resolve(cfg)  # the earlier run to start from must exist before anything loads
    # A result that cannot be written is found now, not after training.
    probe_results_dir(cfg.paths.results_dir)
    result = _new_result(cfg, run_id, started_at)
    record, failed = True, False
    try:
        assembling = time.perf_counter()
        prepared = assemble.assemble(cfg, run_parts, init_source)
        data_seconds = prepared.datamodule.setup_seconds
        result.efficiency["time_data_s"] = data_seconds
        # Loading and transforming the model (data-driven inits' scoring passes too), and building the trainer.
        result.efficiency["time_setup_s"] = time.perf_counter() - assembling - data_seconds
        result.config = OmegaConf.to_container(cfg, resolve=True)  # with any derived epoch budget
        _fit_and_test(cfg, prepared, result)
        result.status = "ok"
    except ConfigError:  # found while assembling (the architecture, a callback's knob): not a run either
        record = False
        raise
    except BaseException as error:  # BaseException: an interrupted run is `killed`, never a silent `ok`
        failed = True
        result.status = sweeps.failure_status(error)  # killed, failed, diverged or oom
        result.error = sweeps.describe_error(error)
        log.error("run %s:\n%s", result.status, traceback.format_exc())
        _LOGGED.add(id(error))  # main() then prints one summary line, not the traceback again
        raise
    finally:
        result.ended_at = utc_now()
        result.budget["wall_time_s"] = time.monotonic() - clock
        accelerator = result.provenance.pop("accelerator", None)
        result.provenance = {**provenance(), **result.provenance}
        if accelerator is not None:
            result.provenance["device"]["accelerator"] = accelerator
        result.fingerprint = config_fingerprint(result, seed_interpolations(cfg))
        if record and rank_zero_only.rank == 0:  # under DDP every rank runs this; one result file per run
            try:
                path = write_result(result, cfg.paths.results_dir)
                result.provenance["result_path"] = str(path)
            except ResultWriteError as error:  # the result is kept elsewhere; the message says where
                log.error("%s", error)
                if not failed:  # a finished run whose result is not in place did not finish ok
                    raise
    return result


def probe_results_dir(results_dir: Any) -> None:
    """Create and remove a file in the results folder: a read-only folder, or a path that is a file, is a
    config error before anything loads (it used to surface after training, losing the result)."""
    folder = Path(str(results_dir))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-", suffix=".tmp")
        try:
            os.write(handle, b"peftbench")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        if folder.exists() and not folder.is_dir():
            reason = "it is a file"
        else:
            reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"paths.results_dir={results_dir}: cannot write a result file there ({reason}); "
            "expected a writable folder (created if missing)"
        ) from None


def _new_result(cfg: DictConfig, run_id: str, started_at: str) -> RunResult:
    result = RunResult(
        run_id=run_id,
        task=cfg.task.name,
        model=cfg.model.name,
        method=cfg.method.name,
        seed=int(cfg.seed),
        study=cfg.get("study"),
        config=OmegaConf.to_container(cfg, resolve=True),
        started_at=started_at,
        output_dir=str(Path(cfg.paths.output_dir).resolve()),
        sweep_dir=sweeps.sweep_dir(),
        precision=str(cfg.trainer.get("precision")),
    )
    result.variant, result.search = sweeps.search_context(cfg)  # `trial` in a search, `tuned` from its choice
    result.provenance.update(sweeps.job_provenance())  # job number and overrides within a multirun
    return result


def _fit_and_test(cfg: DictConfig, prepared: PreparedRun, result: RunResult) -> None:
    from safetensors.torch import save_file

    from peftbench.metrics.inference import measure_inference
    from peftbench.models.backbone import model_fingerprint

    task, module, datamodule, trainer = prepared.task, prepared.module, prepared.datamodule, prepared.trainer
    result.data = {"split_seed": task.split_seed, "sizes": datamodule.split_sizes()}
    if task.type == "classification":  # the classes as trained (inferred from train when not configured)
        result.data["classes"] = list(task.label_names)
    if prepared.init_record is not None:
        result.provenance["init_from"] = prepared.init_record
    if prepared.epoch_budget is not None:
        result.budget.update(prepared.epoch_budget)
    # from_pretrained hands back a model in eval mode, and Lightning checks the modes before any hook can switch
    # them (PeftBenchModule.on_train_start): train mode now, so its "modules in eval mode" warning stays
    # meaningful (peftbench/quiet.py). Dropout and the step order are as before: the first step ran in train mode.
    module.train()
    trainer.fit(module, datamodule=datamodule)
    result.provenance["accelerator"] = (
        trainer.strategy.root_device.type
    )  # cpu, cuda, mps: part of a row's key
    result.selection = {  # the checkpoint callback, when there is one, says which checkpoint it kept
        "monitor": task.monitor,
        "mode": task.monitor_mode,
        # best_validation: a split carved from train; reported_split: the paper's own rule (flagged in reports)
        "rule": "reported_split" if task.selection == "reported_split" else "best_validation",
        "best_checkpoint": None,
        "chosen": "last",
        "best_step": None,
        "global_steps": trainer.global_step,
    }
    for callback in trainer.callbacks:
        if isinstance(callback, Reporter):
            callback.report(result)
    result.budget.update(max_steps=int(task.max_steps), batch_size=int(task.batch_size))
    best_path = result.selection["best_checkpoint"]
    testing = time.perf_counter()
    if cfg.run_test:
        result.test_last = _test(trainer, module, datamodule)
        # The best checkpoint is the last weights when the best validation was the last step's: one test pass.
        best_is_last = result.selection.get("best_step") == result.selection["global_steps"]
        if best_path and not best_is_last:
            result.test = _test(trainer, module, datamodule, ckpt_path=best_path)
        else:  # no checkpointing (fast_dev_run), or the best is the last: the last weights are the chosen ones
            result.test = dict(result.test_last)
        # The chosen checkpoint's predictions: the test pass that ran last.
        result.predictions = _complete_predictions(module.test_predictions, datamodule.split_sizes())
    figures = result.efficiency
    figures["time_test_s"] = time.perf_counter() - testing  # one pass, or two when the best is not the last

    figures["peak_mem_load_rss_mb"] = prepared.load_figures["peak_rss_mb"]
    if prepared.load_figures.get("peak_cuda_allocated_mb") is not None:
        figures["peak_mem_load_cuda_allocated_mb"] = prepared.load_figures["peak_cuda_allocated_mb"]
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights_path = output_dir / WEIGHTS_FILE
    method = prepared.method
    weights = {
        name: tensor.contiguous().cpu() for name, tensor in method.trainable_state_dict(module.model).items()
    }
    save_file(weights, str(weights_path))
    result.provenance["trainable_weights"] = str(weights_path.resolve())  # what init_from= loads
    figures["trainable_disk_mb"] = weights_path.stat().st_size / 2**20
    # Last: merging for the inference figures may consume the trained model (weights are saved above).
    inference_cfg = cfg.get("inference") or {}
    if inference_cfg.get("enabled", True):
        timing = time.perf_counter()
        figures.update(
            measure_inference(module, datamodule, trainer, method, inference_cfg.get("max_batches", 20))
        )
        figures["time_inference_s"] = time.perf_counter() - timing
    result.provenance["model"] = model_fingerprint(prepared.model_cfg)


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


def print_summary(result: RunResult) -> None:
    eff = result.efficiency
    headline = result.config["task"]["headline"]
    score = result.test.get(f"test/{headline}")
    print(
        f"\n{result.method} on {result.task} ({result.model}): trainable {eff.get('trainable_params', 0):,} "
        f"({eff.get('trainable_ratio_pct', float('nan')):.3f} %), test {headline} "
        f"{'n/a' if score is None else f'{score:.4f}'}, {throughput_text(eff)}, "
        f"peak {eff.get('peak_mem_mb', float('nan')):.0f} MiB, train {eff.get('train_time_s', float('nan')):.0f} s\n"
        f"result: {result.provenance.get('result_path')}"
    )


def throughput_text(efficiency: dict[str, Any]) -> str:
    """The summary's training throughput. A run too short to time (every step inside the efficiency monitor's
    warm-up) has no figure, and says so rather than printing ``nan samples/s``."""
    value = efficiency.get("train_samples_per_s")
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.1f} samples/s"
    if "train_samples_per_s" not in efficiency:
        return "– samples/s (not measured)"
    return "– samples/s (too few timed steps)"


# main() sets HYDRA_FULL_ERROR=1 so that Hydra re-raises what it would print; what the user had set is kept
# here, for this process and the sweep jobs it starts.
_USER_HYDRA_FULL_ERROR = "PEFTBENCH_USER_HYDRA_FULL_ERROR"
_LOGGED: set[int] = set()  # ids of exceptions whose traceback run() has already logged
_JOB_STARTED: list[bool] = []  # non-empty once Hydra has handed a job its config (the run folder exists)


def _show_traceback() -> bool:
    """The documented switch (PEFTBENCH_TRACEBACK=1 or the user's HYDRA_FULL_ERROR=1): a config error shows
    its traceback, and exits 1."""
    hydra_full = os.environ.get(_USER_HYDRA_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    return any(value not in ("", "0") for value in (os.environ.get("PEFTBENCH_TRACEBACK", ""), hydra_full))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_job(cfg: DictConfig) -> float | None:
    """One run (one sweep job): what Hydra calls, in this process or in a launcher's child process."""
    _JOB_STARTED.append(True)
    with sweeps.stop_on_signals():
        try:
            from peftbench.search import resolve_choices

            resolve_choices(
                cfg
            )  # a search's choice that cannot be read is a config error, before anything reads it
            gate_bitsandbytes(cfg, sweeps.one_job_per_process())  # before peft is first imported
            result = run(cfg)
        except ConfigError as error:  # not a run: no result file, whatever the sweep settings
            if sweeps.is_multirun():
                sweeps.note_failure("config error", str(error))
            if sweeps.keep_going(cfg):  # a sweeper reads NaN as a failed trial
                log.error("job not run, sweep goes on: config error: %s", error)
                return math.nan
            if _show_traceback():
                raise
            print(f"peftbench-train: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            if sweeps.is_multirun():
                sweeps.note_failure(sweeps.failure_status(error), sweeps.describe_error(error))
            if not sweeps.keep_going(cfg):
                raise
            # The sweep goes on; the failure is in the results folder (status and error).
            log.error("job failed, sweep goes on: %s: %s", type(error).__name__, error)
            return math.nan
        except SystemExit as stop:  # Lightning's SIGTERMException (code 0!) or our Interrupted: `killed`
            signum = stop.signum if isinstance(stop, Interrupted) else sweeps.received_signal()
            if sweeps.is_multirun():
                sweeps.note_failure("killed", sweeps.describe_error(stop))
            if signum is not None:
                raise Interrupted(signum) from None
            raise
    if cfg.get("print_summary", True):
        print_summary(result)
    return sweeps.objective(result)


@entry_point
def main() -> None:
    """``peftbench-train``: Hydra's app, then the exit code that tells the truth.

    A sweep's jobs never end the sweep by failing (``sweep.keep_going``), so Hydra itself would exit 0;
    every job that did not finish ok is printed here, one line each, and the exit code is then non-zero.
    ``--version`` is answered here, before Hydra, whose own flag prints Hydra's version.
    """
    if "--version" in sys.argv[1:]:
        print(console.version_line("peftbench-train"))
        sys.exit(0)
    code: int | str | None = 0
    os.environ.setdefault(_USER_HYDRA_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; the line is printed below
    argv = sys.argv[1:]
    conflict = hydra_errors.mode_conflict(argv)
    if conflict is not None and not _show_traceback():
        print(f"peftbench-train: {conflict}", file=sys.stderr)
        sys.exit(2)
    try:
        train_job()
    except SystemExit as stop:
        code = stop.code
    except hydra_errors.HYDRA_ERRORS as error:  # the command line did not compose
        line = hydra_errors.describe(error, argv)
        if _show_traceback() or line is None:
            raise
        print(f"peftbench-train: {line}", file=sys.stderr)
        code = 2
    except OSError as error:  # Hydra could not create the run folder (the job had not started)
        if _show_traceback() or _JOB_STARTED:
            raise
        print(f"peftbench-train: {hydra_errors.describe_run_folder(error, argv)}", file=sys.stderr)
        code = 2
    except Exception as error:  # a run that failed: its traceback is in the log above (once)
        if id(error) not in _LOGGED or _show_traceback():
            raise
        print(
            f"peftbench-train: run failed: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr
        )
        code = 1
    lines = sweeps.failures()
    for line in lines:
        print(f"peftbench-train: {line}", file=sys.stderr)
    if lines and code in (0, None):
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
