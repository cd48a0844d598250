"""One versioned JSON per run: what was run, on what, how it scored and what it cost.

Files are written atomically (temporary file in the same folder, then ``os.replace``), so a
crashed run leaves either a complete result or none. The run id hashes the resolved config minus
where things are written, so the same run gets the same id on any machine (sweeps resume by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf

from peftbench.resources import PACKAGE_DIR  # identity_config masks it: run ids must not depend on it

# 2 added ``budget`` and ``search``; 3 added ``predictions`` (per-example test predictions), ``curve`` (the
# validation curve) and ``fingerprint`` (the configuration a leaderboard row pools). Older files read as before:
# they lack those fields, and readers fall back (seed-only intervals, no convergence curve) and say so.
SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
# Top-level config keys that say where or how to log or resume, not what is computed: left out of the run id.
RUN_ID_EXCLUDED_KEYS = ("paths", "hydra", "logger", "print_summary", "sweep")
TRACKED_PACKAGES = (
    "peftbench",
    "torch",
    "lightning",
    "transformers",
    "peft",
    "datasets",
    "torchmetrics",
    "hydra-core",
    "bitsandbytes",
)
# Knobs added after results existed, at the value that reproduces the earlier behaviour: left out of the
# run id at that value, so adding a knob never orphans finished results (a resumed sweep still finds them).
RUN_ID_NEUTRAL_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("task", "epochs"): None,
    ("task", "selection"): "carved_validation",
    ("init_from",): None,
    ("reproduction",): None,
}
# Each run's trained weights, beside its outputs (peftbench-export and init_from= load them).
WEIGHTS_FILE = "trainable.safetensors"
# ok; failed (exception); diverged (non-finite loss); oom (out of memory); killed (the OS ended the job's process).
STATUSES = ("ok", "failed", "diverged", "oom", "killed")
# default: the configured hyperparameters; trial: one point of a hyperparameter search (never reported);
# tuned: the trial a search chose by validation score, copied under this label (its test score is reported).
VARIANTS = ("default", "trial", "tuned")


class ResultSchemaError(ValueError):
    """A file that is not a peftbench result of a schema version this code reads."""


@dataclass
class RunResult:
    run_id: str
    task: str
    model: str
    method: str
    seed: int
    status: str = "ok"
    study: str | None = None
    variant: str = "default"
    error: str | None = None
    test: dict[str, float] = field(default_factory=dict)  # checkpoint chosen by the validation monitor
    test_last: dict[str, float] = field(default_factory=dict)  # the final weights, for comparison
    val_best: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)  # monitor, mode, best step, checkpoint
    efficiency: dict[str, Any] = field(default_factory=dict)  # the eff/ figures, without the prefix
    data: dict[str, Any] = field(default_factory=dict)  # split sizes and seeds
    reference: dict[str, float] = field(default_factory=dict)  # ref/ figures (forgetting), when enabled
    budget: dict[str, Any] = field(default_factory=dict)  # steps, samples, tokens, FLOPs estimate, wall time
    search: dict[str, Any] | None = None  # sweeper, trial budget and chosen trial (variant trial/tuned)
    # Per reported split ("test", "test_mismatched"): {"pred": [...], "label": [...]}, one entry per example in
    # the split's own order (fixed by task.split_seed), so runs of one task pair example by example.
    predictions: dict[str, dict[str, list]] = field(default_factory=dict)
    # One entry per validation during training: step, the val/ metrics, train/loss (mean over the interval) and
    # train_tokens_per_s (non-padding tokens over the interval's step time).
    curve: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = (
        None  # config_fingerprint(): what a leaderboard row pools (the config bar the seed)
    )
    precision: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    ended_at: str | None = None
    output_dir: str | None = None
    sweep_dir: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ResultSchemaError("not a peftbench result (no schema_version)")
        if data["schema_version"] not in READABLE_SCHEMA_VERSIONS:
            raise ResultSchemaError(
                f"schema_version {data['schema_version']} (this peftbench reads {READABLE_SCHEMA_VERSIONS})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ResultSchemaError(f"unknown keys {unknown}")
        if data.get("status") not in STATUSES:
            raise ResultSchemaError(f"status {data.get('status')!r} not in {STATUSES}")
        if data.get("variant", "default") not in VARIANTS:
            raise ResultSchemaError(f"variant {data.get('variant')!r} not in {VARIANTS}")
        return cls(**data)

    @property
    def filename(self) -> str:
        # A tuned copy shares its trial's run id (same config); the suffix keeps both files.
        suffix = "" if self.variant == "default" else f"__{self.variant}"
        return f"{self.task}__{self.model}__{self.method}__seed{self.seed}__{self.run_id}{suffix}.json"


@runtime_checkable
class Reporter(Protocol):
    """A run component that writes its own section of the result (efficiency, budget, curve, reference,
    selection): ``train.run`` asks every callback that has ``report`` and knows none of them by name, so a
    new measurement touches its own file and its YAML entry, not the training loop."""

    def report(self, result: RunResult) -> None: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_result(result: RunResult, results_dir: str | Path) -> Path:
    """Write atomically: readers see the old file or the complete new one, never half of it."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / result.filename
    text = json.dumps(_jsonable(result.to_dict()), indent=2, sort_keys=False, allow_nan=False)
    with tempfile.NamedTemporaryFile(
        "w", dir=results_dir, prefix=".tmp-", suffix=".json", delete=False
    ) as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, target)
    return target


def read_result(path: str | Path) -> RunResult:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ResultSchemaError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    return RunResult.from_dict(data)


def _relocatable(value: Any, prefix: str, token: str) -> Any:
    """Files shipped inside the package (task fixtures) resolve to absolute paths; the checkout's location
    must not change a run id, or a sweep resumed from another clone would redo every finished point."""
    if isinstance(value, str):
        return token + value[len(prefix) :] if value.startswith(prefix) else value
    if isinstance(value, dict):
        return {k: _relocatable(v, prefix, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocatable(v, prefix, token) for v in value]
    return value


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config with output locations masked: what defines the run's identity."""
    masked = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "paths" in masked:
        for key in list(masked.paths):
            masked.paths[key] = f"<paths.{key}>"
    masked.pop("hydra", None)
    data = OmegaConf.to_container(masked, resolve=True)
    data = {k: v for k, v in data.items() if k not in RUN_ID_EXCLUDED_KEYS}
    data = _relocatable(data, str(PACKAGE_DIR) + os.sep, "<peftbench>/")
    _drop_neutral_defaults(data)
    return data


def _parent(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The dict holding ``path[-1]``, if the path exists down to it."""
    node: Any = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) and path[-1] in node else None


def _drop_neutral_defaults(data: dict[str, Any]) -> None:
    for path, neutral in RUN_ID_NEUTRAL_DEFAULTS.items():
        parent = _parent(data, path)
        if parent is not None and parent[path[-1]] == neutral:
            del parent[path[-1]]


def compute_run_id(cfg: DictConfig) -> str:
    """Stable across machines and output folders: sha256 of the identity config, 12 hex digits."""
    text = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Keys a leaderboard row pools over besides those out of the run id: the seed (that is what a row's n counts), the
# study label, and presentation (the progress bar). Everything else that differs makes another row.
FINGERPRINT_EXCLUDED_KEYS = (*RUN_ID_EXCLUDED_KEYS, "seed", "study")
FINGERPRINT_EXCLUDED_PATHS = (("callbacks", "progress_bar"),)
# An absolute path into a packaged file (task fixtures): everything before the package folder is machine-local.
_PACKAGE_PATH = re.compile(r"^.*?[/\\]peftbench[/\\](?=tasks[/\\]fixtures[/\\])")


def device_kind(result: RunResult) -> str:
    """cpu, cuda or mps: where the run trained (older files: cuda when a CUDA device was recorded)."""
    device = (result.provenance or {}).get("device") or {}
    return str(device.get("accelerator") or ("cuda" if device.get("cuda_device") else "cpu"))


def seed_interpolations(cfg: DictConfig) -> list[tuple[str, ...]]:
    """Key paths whose value is ``${seed}`` (e.g. sparse's ``method.mask_seed``): they vary with the seed, so a
    row's fingerprint masks them like the seed itself."""
    found: list[tuple[str, ...]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, str(key)))
        elif isinstance(node, str) and node.replace(" ", "") == "${seed}":
            found.append(path)

    walk(OmegaConf.to_container(cfg, resolve=False), ())
    return found


def _guessed_seed_paths(config: dict[str, Any]) -> list[tuple[str, ...]]:
    """Older files did not record which keys followed the seed: a nested ``*seed`` key equal to it did
    (``task.split_seed`` excepted: it fixes the test set and is set on its own)."""
    seed, found = config.get("seed"), []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, str(key)))
        elif len(path) > 1 and path[-1].endswith("seed") and path != ("task", "split_seed") and node == seed:
            found.append(path)

    walk(config, ())
    return found


def fingerprint_config(
    config: dict[str, Any], seed_paths: list[tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """A stored (resolved) config with its seed, output locations and presentation removed.

    Stored configs are resolved, so every value under ``paths`` also appears spelled out inside other values
    (``task.source.data_files``); those prefixes are masked as ``<paths.KEY>``, longest first, and packaged
    fixture paths as ``<peftbench>/``, so the same configuration on two machines has one fingerprint. Keys that
    follow the seed (``seed_paths``; guessed for older files) read ``<seed>``.
    """
    data = json.loads(json.dumps(config, default=str))
    seed_paths = _guessed_seed_paths(data) if seed_paths is None else seed_paths
    prefixes = sorted(
        ((str(v), f"<paths.{k}>") for k, v in (data.get("paths") or {}).items() if isinstance(v, str) and v),
        key=lambda item: -len(item[0]),
    )

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            for prefix, token in prefixes:
                if value.startswith(prefix):
                    return token + value[len(prefix) :]
            return _PACKAGE_PATH.sub("<peftbench>/", value)
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    for path in seed_paths:
        parent = _parent(data, path)
        if parent is not None:
            parent[path[-1]] = "<seed>"
    data = mask({k: v for k, v in data.items() if k not in FINGERPRINT_EXCLUDED_KEYS})
    _drop_neutral_defaults(data)
    for path in FINGERPRINT_EXCLUDED_PATHS:
        parent = _parent(data, path)
        if parent is not None:
            del parent[path[-1]]
    return data


# How a seed ordered the training data: before schema 3 the sampler drew from the global random state after the
# method's initialisation had used it (so data order differed between methods at one seed); since, the sampler
# has its own generator seeded from `seed`. Rows never pool the two.
DATA_ORDER_GLOBAL_RNG, DATA_ORDER_SEEDED = "global_rng", "seeded_sampler"


def config_fingerprint(result: RunResult, seed_paths: list[tuple[str, ...]] | None = None) -> str:
    """The configuration a leaderboard row pools: the config bar seed and paths, plus device kind and precision.

    Two results share a fingerprint exactly when they ran the same configuration at different seeds, on the
    same kind of device at the same precision, with the same data-order rule; any other difference (a knob,
    the budget, the device) is another row. 12 hex digits of sha256, like the run id. A result that stored
    its fingerprint (schema 3) keeps it.
    """
    if result.fingerprint and seed_paths is None:
        return result.fingerprint
    config = result.config or {}
    identity = {
        "config": fingerprint_config(config, seed_paths),
        "device": device_kind(result),
        "precision": result.precision or config.get("trainer", {}).get("precision"),
        "data_order": DATA_ORDER_SEEDED if result.schema_version >= 3 else DATA_ORDER_GLOBAL_RNG,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    cwd = cwd or PACKAGE_DIR
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def provenance() -> dict[str, Any]:
    import torch

    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    from peftbench.config import cpu_has_bf16, cpu_model_name

    device: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        # The CPU's name and its bf16 support: throughput figures are only comparable within one kind of CPU.
        "cpu_model": cpu_model_name(),
        "cpu_bf16_native": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        device["cuda_device"] = torch.cuda.get_device_name(0)
        device["cuda_version"] = torch.version.cuda
    return {**git_state(), "packages": packages, "python": platform.python_version(), "device": device}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_results(results_dir: str | Path) -> tuple[list[RunResult], list[tuple[Path, str]]]:
    """Every readable result under a folder, and (path, reason) for each file skipped."""
    results, skipped = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        try:
            results.append(read_result(path))
        except (ResultSchemaError, TypeError, OSError) as error:
            skipped.append((path, str(error)))
    return results, skipped


def find_ok_result(results_dir: str | Path, run_id: str) -> RunResult | None:
    """The finished (status ok) result of this run id in a results folder, if any: what a resumed sweep skips."""
    for path in sorted(Path(results_dir).glob(f"*__{run_id}*.json")):
        try:
            result = read_result(path)
        except (ResultSchemaError, TypeError, OSError):
            continue
        if result.run_id == run_id and result.status == "ok" and result.variant != "tuned":
            return result
    return None
