"""HF peft's method comparison ("peft-mc"): its result JSONs read as rows, ours written in its schema.

peft's ``method_comparison/<task>/run.py`` writes one JSON per experiment with three blocks: ``run_info``
(experiment name, ``train_config``, ``peft_config``), ``train_info`` (status, memory, times, parameter counts and
``metrics``: one entry per validation, then one with the test figures) and ``meta_info`` (package versions,
system). docs/interop.md has the field-by-field mapping and what neither side can fill.

Reading keeps what the leaderboard needs and marks the result (``study: peft-mc``, label ``EXPERIMENT
(peft-mc)``). Their files carry no per-example predictions and one seed per experiment, so their rows get
no interval (or a seed-only one) and are never mistaken for ours. Their test figure is measured on the final
weights, not on a checkpoint chosen by validation; the result says so (``selection.rule: final_weights``).

Why by hand: peft ships no reader for these files (its app reads them into pandas inline), and the mapping
is what this module is about; the checks say which field is wrong, one line, as ``RunResult.from_dict`` does.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.results import (
    SCHEMA_VERSION,
    ResultSchemaError,
    RunResult,
    _jsonable,
    _write_atomically,
    config_fingerprint,
    scan_results,
    skip_lines,
)

SOURCE = "peft-mc"  # the study label and label suffix of every imported result
BLOCKS = ("run_info", "train_info", "meta_info")
# Their task folders keep results in these (main runs, runs off peft's main branch, cancelled runs): the
# folder above one of them is the task's name (MetaMathQA), which the files themselves never state.
RESULT_FOLDERS = ("results", "temporary_results", "cancelled_results")
# Their TrainStatus values; a cancelled run (Ctrl-C or an exception during training) did not finish.
STATUS_TO_OURS = {"success": "ok", "failed": "failed", "canceled": "failed"}
MIB = 2**20
# package_info keys are "<name>-version" for these (their get_package_info).
PACKAGES = ("transformers", "peft", "datasets", "bitsandbytes", "torch")
# How their memory figure is measured: torch.<accelerator>.max_memory_reserved() minus the reserved memory of
# an empty accelerator before the model loads (a few MiB): in effect the absolute peak of reserved memory.
MEMORY_SOURCE = "peft-mc accelerator_memory_max: peak reserved minus the reserved memory before loading"
# Memory keys before peft made the comparison device-agnostic (July 2025): cuda_* instead of accelerator_*.
LEGACY_MEMORY_KEYS = {"accelerator_memory_max": "cuda_memory_max"}


def recognises(data: Any) -> bool:
    """A peft-mc result: an object with any of their blocks and without our ``schema_version`` (a file with
    some blocks missing is theirs, malformed, and is skipped naming the missing block)."""
    return isinstance(data, dict) and "schema_version" not in data and any(b in data for b in BLOCKS)


# --- reading -------------------------------------------------------------------------------------------------


def _fail(where: str, problem: str) -> ResultSchemaError:
    return ResultSchemaError(f"peft-mc result: {where}: {problem}")


def _object(node: dict[str, Any], key: str, where: str, optional: bool = False) -> dict[str, Any]:
    value = node.get(key)
    if value is None and optional:
        return {}
    if key not in node:
        raise _fail(where, f"no {key}")
    if not isinstance(value, dict):
        raise _fail(f"{where}.{key}", f"{value!r:.60} is not an object")
    return value


def _number(node: dict[str, Any], key: str, where: str) -> float | None:
    """A figure, or None when absent or null; anything else names the field (NaN is read as absent)."""
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{where}.{key}", f"{value!r:.60} is not a number")
    return None if isinstance(value, float) and math.isnan(value) else value


def _text(node: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = node.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{key}", f"{value!r:.60} is not a non-empty string")
    return value


def task_of(path: Path | None) -> str:
    """The task a file belongs to: the folder holding ``results/`` (their layout, e.g. ``MetaMathQA``), else
    the file's own folder (a copy of their files in ``runs/MetaMathQA/``); ``peft-mc`` without a path."""
    if path is None:
        return SOURCE
    parent = path.parent
    return parent.parent.name if parent.name in RESULT_FOLDERS and parent.parent.name else parent.name


def _metrics(train_info: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = train_info.get("metrics", [])
    if not isinstance(metrics, list):
        raise _fail("train_info.metrics", f"{metrics!r:.60} is not a list")
    for number, entry in enumerate(metrics):
        if not isinstance(entry, dict):
            raise _fail(f"train_info.metrics[{number}]", f"{entry!r:.60} is not an object")
    return metrics


def _prefixed(entry: dict[str, Any], prefix: str, where: str) -> dict[str, float]:
    """``{"test accuracy": 0.4}`` -> ``{"accuracy": 0.4}`` for one prefix ("test ", "valid ")."""
    return {
        key[len(prefix) :]: value
        for key in entry
        if key.startswith(prefix) and (value := _number(entry, key, where)) is not None
    }


def _higher_is_better(metric: str) -> bool:
    from peftbench.stats import higher_is_better  # imported here: stats loads the task metrics

    return higher_is_better(metric)


def from_peft_mc(data: dict[str, Any], path: Path | None = None) -> RunResult:
    """One peft-mc result as a RunResult (``study: peft-mc``); a malformed one is a ResultSchemaError naming
    the field. ``path`` gives the task (``task_of``) and is recorded in the provenance."""
    if not recognises(data):
        raise ResultSchemaError(f"not a peft-mc result (no {', '.join(BLOCKS)} blocks)")
    run_info = _object(data, "run_info", "file")
    train_info = _object(data, "train_info", "file")
    meta_info = _object(data, "meta_info", "file", optional=True)
    train_config = _object(run_info, "train_config", "run_info")
    model = _text(train_config, "model_id", "run_info.train_config", required=True)
    peft_config = run_info.get("peft_config")
    if peft_config is not None and not isinstance(peft_config, dict):
        raise _fail("run_info.peft_config", f"{peft_config!r:.60} is not an object or null")
    experiment = _text(run_info, "experiment_name", "run_info")
    peft_type = _text(peft_config or {}, "peft_type", "run_info.peft_config")
    # The experiment folder names the method as peft spells it in lower case (lora, ia3, full-finetuning).
    method = (experiment or "").split("/")[0] or (peft_type.lower() if peft_type else "full-finetuning")
    experiment = experiment or f"{method}/{model}"
    status = train_info.get("status")
    if status not in STATUS_TO_OURS:
        raise _fail("train_info.status", f"{status!r:.60} not in {tuple(STATUS_TO_OURS)}")
    seed = train_config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _fail("run_info.train_config.seed", f"{seed!r:.60} is not an integer")
    metrics = _metrics(train_info)

    def where(number: int | None) -> str:
        return f"train_info.metrics[{number}]"

    tested = [(n, e) for n, e in enumerate(metrics) if any(k.startswith("test ") for k in e)]
    test_number, test_entry = tested[-1] if tested else (None, {})
    test = _prefixed(test_entry, "test ", where(test_number))
    # The headline is the entry's first test metric (theirs have one; our export writes our headline first).
    headline = next(iter(test), "accuracy")
    monitor = f"val/{headline}"
    curve = []
    for number, entry in enumerate(metrics):
        valid = _prefixed(entry, "valid ", where(number))
        step = _number(entry, "step", where(number))
        if not valid or step is None:
            continue
        point: dict[str, Any] = {"step": int(step), **{f"val/{k}": v for k, v in valid.items()}}
        for theirs, ours in (("train loss", "train/loss"), ("tokens / sec", "train_tokens_per_s")):
            if _number(entry, theirs, where(number)) is not None:
                point[ours] = entry[theirs]
        curve.append(point)
    watched = [p[monitor] for p in curve if monitor in p]
    better = max if _higher_is_better(headline) else min
    last = test_entry or (metrics[-1] if metrics else {})
    last_where = where(test_number if tested else len(metrics) - 1)
    steps = _number(last, "step", last_where)
    samples = _number(last, "train samples", last_where)
    tokens = _number(last, "train total tokens", last_where)
    forgetting = _number(last, "forgetting", last_where)
    memory_key = "accelerator_memory_max"
    if memory_key not in train_info and LEGACY_MEMORY_KEYS[memory_key] in train_info:
        memory_key = LEGACY_MEMORY_KEYS[memory_key]
    peak = _number(train_info, memory_key, "train_info")
    train_time = _number(train_info, "train_time", "train_info")
    trainable = _number(train_info, "num_trainable_params", "train_info")
    total = _number(train_info, "num_total_params", "train_info")
    file_size = _number(train_info, "file_size", "train_info")
    efficiency: dict[str, Any] = {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_ratio_pct": 100.0 * trainable / total if trainable is not None and total else None,
        "train_time_s": train_time,
        # Derived from their totals (train_time excludes evaluation): throughput over the whole training.
        "train_samples_per_s": samples / train_time if samples is not None and train_time else None,
        "train_tokens_per_s": tokens / train_time if tokens is not None and train_time else None,
        "trainable_disk_mb": file_size / MIB if file_size is not None else None,
    }
    if peak is not None:
        efficiency.update(
            peak_mem_mb=peak / MIB,
            peak_mem_kind="cuda_reserved",
            peak_cuda_reserved_mb=peak / MIB,
            peak_mem_source=MEMORY_SOURCE,
        )
    efficiency = {k: v for k, v in efficiency.items() if v is not None}
    max_steps = _number(train_config, "max_steps", "run_info.train_config")
    batch_size = _number(train_config, "batch_size", "run_info.train_config")
    budget = {
        "steps": int(steps) if steps is not None else None,
        "max_steps": int(max_steps) if max_steps is not None else None,
        "batch_size": int(batch_size) if batch_size is not None else None,
        "samples": samples,
        "tokens": tokens,
        "wall_time_s": _number(run_info, "total_time", "run_info"),
    }
    task = task_of(path)
    created_at = _text(run_info, "created_at", "run_info")
    error = run_info.get("error_msg") or None
    if status != "success":
        error = f"peft-mc status {status}" + (f": {error}" if error else "")
    identity = json.dumps([SOURCE, task, model, experiment, seed, created_at], default=str)
    package_info = _object(meta_info, "package_info", "meta_info", optional=True)
    system_info = _object(meta_info, "system_info", "meta_info", optional=True)
    accelerator = system_info.get("accelerator")
    record = {
        "run_id": f"{SOURCE}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}",
        "task": task,
        "model": model,
        "method": method,
        "seed": seed,
        "status": STATUS_TO_OURS[status],
        "study": SOURCE,
        "error": error,
        "test": {f"test/{k}": v for k, v in test.items()},
        "val_best": {monitor: better(watched)} if watched else {},
        "selection": {
            "monitor": monitor,
            "mode": "max" if _higher_is_better(headline) else "min",
            "rule": "final_weights",  # peft-mc tests the weights after the last step
            "chosen": "last",
            "best_step": None,
            "global_steps": budget["steps"],
        },
        "efficiency": efficiency,
        # Their forgetting is the causal-LM loss on held-out Wikipedia text after minus before training.
        "reference": {"ref/lm_loss_delta": forgetting} if forgetting is not None else {},
        "budget": {k: v for k, v in budget.items() if v is not None},
        "curve": curve,
        # One row per experiment, pooled over seeds: its name and training parameters bar the seed.
        "fingerprint": _fingerprint(task, model, experiment, train_config),
        "precision": train_config.get("dtype") if isinstance(train_config.get("dtype"), str) else None,
        "config": {
            "seed": seed,
            "task": {"name": task, "headline": headline, "monitor": monitor},
            "model": {"name": model},
            "method": {"name": method, "experiment": experiment, "peft_type": peft_type},
            "trainer": {"max_steps": budget["max_steps"]},
            SOURCE.replace("-", "_"): {"train_config": train_config, "peft_config": peft_config},
        },
        "provenance": {
            "source": SOURCE,
            "file": str(path) if path is not None else None,
            "packages": {
                name: package_info.get(f"{name}-version")
                for name in PACKAGES
                if package_info.get(f"{name}-version")
            },
            "device": {
                "accelerator": "cuda" if accelerator else None,
                "cuda_device": accelerator,
                "processor": system_info.get("processor"),
                "platform": " ".join(
                    str(system_info[k]) for k in ("system", "release", "machine") if system_info.get(k)
                )
                or None,
            },
            "peft_mc": {
                "run_info": {k: v for k, v in run_info.items() if k not in ("train_config", "peft_config")},
                "train_info": {k: v for k, v in train_info.items() if k != "metrics"},
                "meta_info": meta_info,
            },
        },
        "started_at": created_at,
        "schema_version": SCHEMA_VERSION,
    }
    # The same checks as our own files: what the leaderboard relies on (figures are numbers) holds here too.
    try:
        return RunResult.from_dict(_jsonable(record))
    except ResultSchemaError as error:
        raise _fail("as a peftbench result", str(error)) from None


def _fingerprint(task: str, model: str, experiment: str, train_config: dict[str, Any]) -> str:
    unseeded = {k: v for k, v in train_config.items() if k != "seed"}
    text = json.dumps([SOURCE, task, model, experiment, unseeded], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def imported_label(result: RunResult) -> str | None:
    """The leaderboard label of an imported result: their experiment name, marked (``lora/rank32 (peft-mc)``);
    None for our own runs."""
    if result.study != SOURCE or (result.provenance or {}).get("source") != SOURCE:
        return None
    experiment = ((result.config or {}).get("method") or {}).get("experiment") or result.method
    return f"{experiment} ({SOURCE})"


# --- writing -------------------------------------------------------------------------------------------------


def _dtype(precision: str | None, quantization: Any) -> str | None:
    """Their dtype is the weights' dtype; under Lightning's mixed precision ours stay float32 (use_amp)."""
    if quantization:
        return "int4"  # conf/quantization: nf4 / fp4 load the linear weights in 4 bits
    if not precision:
        return None
    if precision.endswith("-mixed"):
        return "float32"
    return {"bf16": "bfloat16", "16": "float16", "32": "float32", "64": "float64"}.get(
        precision.removesuffix("-true")
    )


def _peft_config(result: RunResult) -> dict[str, Any] | None:
    """Our method config in the shape of ``PeftConfig.to_dict()``: ``peft_type`` from peft's own registry for
    methods built on a peft config class, null for ours (BitFit, adapters, ...); null for full fine-tuning, as
    theirs."""
    method = (result.config or {}).get("method") or {}
    if result.method == "full":
        return None
    peft_config = method.get("peft_config")
    base = ((result.config or {}).get("model") or {}).get("name_or_path")
    if isinstance(peft_config, dict):
        target = str(peft_config.get("_target_", "")).rsplit(".", 1)[-1]
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING  # peft's registry: type -> config class

        peft_type = next(
            (str(t.value) for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items() if cls.__name__ == target), None
        )
        fields = {k: v for k, v in peft_config.items() if not k.startswith("_")}
        return {"peft_type": peft_type, "base_model_name_or_path": base, **fields}
    fields = {
        k: v for k, v in method.items() if k not in ("name", "impl", "meta", "paper", "lr", "lr_source")
    }
    return {"peft_type": None, "base_model_name_or_path": base, **fields}


def _train_config(result: RunResult) -> dict[str, Any]:
    """Their TrainConfig fields, filled from ours where ours records the same thing, else null."""
    config = result.config or {}
    task, trainer = config.get("task") or {}, config.get("trainer") or {}
    optimizer, model = config.get("optimizer") or {}, config.get("model") or {}
    precision = result.precision or trainer.get("precision")
    clip = trainer.get("gradient_clip_val")
    return {
        "model_id": result.model,  # our model name; the hub id goes to peft_config.base_model_name_or_path
        "dtype": _dtype(precision, model.get("quantization")),
        "max_seq_length": task.get("max_length"),
        "batch_size": result.budget.get("batch_size", task.get("batch_size")),
        "batch_size_eval": task.get("eval_batch_size"),
        "max_steps": result.budget.get("max_steps", task.get("max_steps")),
        "eval_steps": task.get("val_every_n_steps"),
        "compile": None,
        "use_gc": None,
        "query_template": None,
        "seed": result.seed,
        # Theirs: 0 skips clipping; ours: null does.
        "grad_norm_clip": (clip or 0.0) if "gradient_clip_val" in trainer else None,
        "optimizer_type": str(optimizer["_target_"]).rsplit(".", 1)[-1] if "_target_" in optimizer else None,
        "optimizer_kwargs": {k: v for k, v in optimizer.items() if not k.startswith("_")},
        "lr_scheduler": (config.get("scheduler") or {}).get("name"),
        "use_amp": precision.endswith("-mixed") if isinstance(precision, str) else None,
        "autocast_adapter_dtype": None,
        "generation_kwargs": None,
        "attn_implementation": model.get("attn_implementation"),
        "init_kv_cache_prefix": None,
    }


def experiment_name(result: RunResult) -> str:
    """``METHOD/MODEL-FINGERPRINT``: their experiment is a configuration, so our seeds of one share it."""
    suffix = "" if result.variant == "default" else f"-{result.variant}"
    return f"{result.method}/{result.model}-{config_fingerprint(result)}{suffix}"


def to_peft_mc(result: RunResult) -> dict[str, Any]:
    """Our result in peft-mc's schema (their ``log_results`` layout); what ours does not record is null."""
    efficiency, budget = result.efficiency or {}, result.budget or {}
    reserved = efficiency.get("peak_cuda_reserved_mb")
    if reserved is None and efficiency.get("peak_mem_kind") == "cuda_reserved":
        reserved = efficiency.get("peak_mem_mb")
    metrics: list[dict[str, Any]] = []
    for point in result.curve or []:
        entry: dict[str, Any] = {"step": point.get("step")}
        entry.update({f"valid {k[4:]}": v for k, v in point.items() if k.startswith("val/")})
        if "train/loss" in point:
            entry["train loss"] = point["train/loss"]
        if "train_tokens_per_s" in point:
            entry["tokens / sec"] = point["train_tokens_per_s"]
        metrics.append(entry)
    final: dict[str, Any] = {"step": budget.get("steps")}
    # The headline first: a reader of their files takes the first test metric as the headline (theirs have one).
    headline = ((result.config or {}).get("task") or {}).get("headline", "accuracy")
    tested = sorted(
        (k for k in result.test or {} if k.startswith("test/")), key=lambda k: k != f"test/{headline}"
    )
    final.update({f"test {k[5:]}": result.test[k] for k in tested})
    losses = [p["train/loss"] for p in result.curve or [] if p.get("train/loss") is not None]
    final.update(
        {
            "train loss": losses[-1] if losses else None,
            "train samples": budget.get("samples"),
            "train total tokens": budget.get("tokens"),
        }
    )
    if (result.reference or {}).get("ref/lm_loss_delta") is not None:
        final["forgetting"] = result.reference["ref/lm_loss_delta"]
    metrics.append(final)
    disk = efficiency.get("trainable_disk_mb")
    provenance = result.provenance or {}
    packages, device = provenance.get("packages") or {}, provenance.get("device") or {}
    package_info: dict[str, Any] = {}
    for name in PACKAGES:
        package_info[f"{name}-version"] = packages.get(name)
        package_info[f"{name}-commit-hash"] = None
    return {
        "run_info": {
            "created_at": result.started_at,
            "total_time": budget.get("wall_time_s"),
            "experiment_name": experiment_name(result),
            "peft_branch": None,
            "peft_worktree_is_dirty": None,
            "train_config": _train_config(result),
            "peft_config": _peft_config(result),
            "error_msg": ""
            if result.status == "ok"
            else ": ".join(filter(None, [result.status, result.error])),
        },
        "train_info": {
            "accelerator_memory_reserved_avg": None,
            "accelerator_memory_max": int(reserved * MIB) if reserved is not None else None,
            "accelerator_memory_reserved_99th": None,
            "train_time": efficiency.get("train_time_s"),
            "file_size": int(disk * MIB) if disk is not None else None,
            "num_trainable_params": efficiency.get("trainable_params"),
            "num_total_params": efficiency.get("total_params"),
            "status": "success" if result.status == "ok" else "failed",
            "metrics": metrics,
        },
        "meta_info": {
            "model_info": {"sha": (provenance.get("model") or {}).get("revision"), "created_at": None},
            "dataset_info": {},
            "package_info": package_info,
            "system_info": {
                "system": None,
                "release": None,
                "version": None,
                "machine": None,
                "processor": device.get("processor"),
                "accelerator": device.get("cuda_device"),
            },
            "pytorch_info": None,
        },
    }


def export_path(result: RunResult) -> Path:
    """``TASK/results/METHOD--MODEL-FINGERPRINT--seedS-RUNID.json``: their layout (the task folder holds
    ``results/``, the file is the experiment name with ``/`` as ``--``), one file per seed."""
    stem = experiment_name(result).replace("/", "--")
    return Path(result.task) / "results" / f"{stem}--seed{result.seed}-{result.run_id}.json"


@dataclass
class Export:
    """What ``export`` did: files written, search trials left out, and one line per file not read."""

    written: list[Path] = field(default_factory=list)
    trials: int = 0
    problems: list[str] = field(default_factory=list)


def export(
    results_dir: str | Path, out_dir: str | Path, results: Iterable[RunResult] | None = None
) -> Export:
    """Every result under ``results_dir`` (or ``results``) as a peft-mc file under ``out_dir``.

    Search trials are left out: they are never reported, and their schema has no place to say a file is one.
    Foreign files in ``results_dir`` are not ours to export and are listed as skipped.
    """
    report = Export()
    if results is None:
        loaded, skipped = scan_results(results_dir)
        results = [result for _, result in loaded]
        report.problems = skip_lines(skipped)
    for result in results:
        if result.variant == "trial":
            report.trials += 1
            continue
        target = Path(out_dir) / export_path(result)
        _write_atomically(json.dumps(_jsonable(to_peft_mc(result)), indent=2, allow_nan=False) + "\n", target)
        report.written.append(target)
    return report
