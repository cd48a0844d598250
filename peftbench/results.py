"""One versioned JSON per run: what was run, on what, how it scored and what it cost.

Files are written atomically (temporary file in the same folder, then ``os.replace``), so a
crashed run leaves either a complete result or none. The run id hashes the resolved config minus
where things are written, so the same run gets the same id on any machine (sweeps resume by it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
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
    ("optimizer", "head_lr"): None,
    ("optimizer", "lr_factor"): 1.0,
    ("model", "pooling"): "native",
}
# Entries that measure or describe a run without changing what it trains, added after results existed: out of the
# run id and the fingerprint at any value, so finished results keep their ids (a resumed sweep still finds them).
# model.hub_id only names where the base weights come from (exports record it); MiniLM's default sets it.
RUN_ID_EXCLUDED_PATHS: tuple[tuple[str, ...], ...] = (("callbacks", "energy"), ("model", "hub_id"))
# Presentation: what the console shows, never what the run trains. The progress bar (any class, any refresh rate,
# or none) is hashed as the default preset's, so the default config keeps the id it had before this rule and a
# sweep resumed with another bar, or under debug=smoke's quiet console, finds its finished points. Trainer keys
# listed with None are left out of the hash.
RUN_ID_PRESENTATION: dict[tuple[str, ...], Any] = {
    ("callbacks", "progress_bar"): {
        "_target_": "lightning.pytorch.callbacks.TQDMProgressBar",
        "refresh_rate": 10,
    },
    ("trainer", "enable_progress_bar"): None,
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


# Why by hand: the result is a plain dataclass written by this code; a schema library would be a new dependency
# for ~40 lines, and the checks below also say what readers rely on (figures are numbers, curves are lists).
Check = Callable[[Any], "str | None"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(kind: type | tuple[type, ...], optional: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"{value!r} is not {_kind_name(kind)}"
        return None if isinstance(value, kind) else f"{value!r:.60} is not {_kind_name(kind)}"

    return check


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {
            int: "an integer",
            float: "a number",
            str: "a string",
            bool: "true/false",
            dict: "an object",
            list: "a list",
        }.get(k, k.__name__)
        for k in kinds
    )


def _mapping(values: Check | None = None, optional: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            return f"{value!r:.60} is not an object"
        for key, item in value.items():
            problem = values(item) if values else None
            if problem:
                return f"{key}: {problem}"
        return None

    return check


def _metric(value: Any) -> str | None:
    """A metric: a number, or null (a NaN is written as null)."""
    return None if value is None or _is_number(value) else f"{value!r:.60} is not a number"


def _figures(value: Any) -> str | None:
    """eff/ and budget figures: numbers or null, bar the descriptive keys (DESCRIPTIVE_FIGURE_SUFFIXES)."""
    if not isinstance(value, dict):
        return f"{value!r:.60} is not an object"
    for key, item in value.items():
        if str(key).endswith(DESCRIPTIVE_FIGURE_SUFFIXES):
            if item is not None and not isinstance(item, str):
                return f"{key}: {item!r:.60} is not a string"
        elif _metric(item):
            return f"{key}: {_metric(item)}"
    return None


def _selection(value: Any) -> str | None:
    problem = _mapping()(value)
    if problem:
        return problem
    for key, kind in (
        ("best_step", int),
        ("global_steps", int),
        ("best_checkpoint", str),
        ("monitor", str),
        ("mode", str),
        ("rule", str),
        ("chosen", str),
    ):
        if key in value:
            problem = _scalar(kind, optional=True)(value[key])
            if problem:
                return f"{key}: {problem}"
    return None


def _predictions(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{value!r:.60} is not an object"
    for split, record in value.items():
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("pred"), list)
            or not isinstance(record.get("label"), list)
        ):
            return f"{split}: expected {{pred: [...], label: [...]}}"
        if len(record["pred"]) != len(record["label"]):
            return f"{split}: {len(record['pred'])} predictions for {len(record['label'])} labels"
        if "index" in record and (
            not isinstance(record["index"], list) or len(record["index"]) != len(record["pred"])
        ):
            return f"{split}: index is not a list as long as pred"
        if "prob" in record and (
            not isinstance(record["prob"], list)
            or len(record["prob"]) != len(record["pred"])
            or not all(isinstance(row, list) and all(_is_number(p) for p in row) for row in record["prob"])
        ):
            return f"{split}: prob is not a list of class-probability rows as long as pred"
    return None


def _curve(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{value!r:.60} is not a list"
    for number, point in enumerate(value):
        if not isinstance(point, dict) or not _is_number(point.get("step")):
            return f"entry {number} is not an object with a numeric step"
        for key, item in point.items():
            if _metric(item):
                return f"entry {number}: {key}: {_metric(item)}"
    return None


def _config(value: Any) -> str | None:
    """The stored config: readers index its groups (task.headline, method.name), so those must be objects."""
    if not isinstance(value, dict):
        return f"{value!r:.60} is not an object"
    for group in ("task", "model", "method", "trainer", "optimizer", "paths"):
        if group in value and not isinstance(value[group], dict):
            return f"{group}: {value[group]!r:.60} is not an object"
    task = value.get("task") or {}
    for key in ("headline", "monitor", "name"):
        if key in task and not isinstance(task[key], str):
            return f"task.{key}: {task[key]!r:.60} is not a string"
    return None


def _provenance(value: Any) -> str | None:
    problem = _mapping()(value)
    if problem:
        return problem
    for key in ("device", "packages", "model", "init_from"):
        if key in value and value[key] is not None and not isinstance(value[key], dict):
            return f"{key}: {value[key]!r:.60} is not an object"
    return None


def _seed(value: Any) -> str | None:
    return (
        None if isinstance(value, int) and not isinstance(value, bool) else f"{value!r:.60} is not an integer"
    )


# Figure keys with these endings name a measurement's method or unit, not a quantity: strings.
DESCRIPTIVE_FIGURE_SUFFIXES = ("_source", "_kind", "_formula")
_REQUIRED = ("run_id", "task", "model", "method", "seed", "status")
_text, _maybe_text = _scalar(str), _scalar(str, optional=True)
_FIELD_CHECKS: dict[str, Check] = {
    "run_id": _text,
    "task": _text,
    "model": _text,
    "method": _text,
    "seed": _seed,
    "status": _text,
    "study": _maybe_text,
    "variant": _text,
    "error": _maybe_text,
    "test": _mapping(_metric),
    "test_last": _mapping(_metric),
    "val_best": _mapping(_metric),
    "selection": _selection,
    "efficiency": _figures,
    "data": _mapping(),
    "reference": _mapping(_metric),
    "budget": _figures,
    "search": _mapping(optional=True),
    "predictions": _predictions,
    "curve": _curve,
    "fingerprint": _maybe_text,
    "precision": _maybe_text,
    "config": _config,
    "provenance": _provenance,
    "started_at": _maybe_text,
    "ended_at": _maybe_text,
    "output_dir": _maybe_text,
    "sweep_dir": _maybe_text,
    "schema_version": _scalar(int),
}


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
    # the split's own order (fixed by task.split_seed), so runs of one task pair example by example. A task with
    # probability metrics (auroc, log_loss, ...) also stores "prob": each example's class probabilities.
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
        """A result from its JSON form; anything else (wrong schema, keys or types) is a ResultSchemaError that
        names the field, so every reader can skip the file with one line instead of crashing on it later."""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ResultSchemaError("not a peftbench result (no schema_version)")
        if data["schema_version"] not in READABLE_SCHEMA_VERSIONS or isinstance(data["schema_version"], bool):
            raise ResultSchemaError(
                f"schema_version {data['schema_version']!r} (this peftbench reads {READABLE_SCHEMA_VERSIONS})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ResultSchemaError(f"unknown keys {unknown}")
        missing = sorted(
            f.name for f in dataclasses.fields(cls) if f.name in _REQUIRED and f.name not in data
        )
        if missing:
            raise ResultSchemaError(f"missing keys {missing}")
        if data.get("status") not in STATUSES:
            raise ResultSchemaError(f"status {data.get('status')!r} not in {STATUSES}")
        if data.get("variant", "default") not in VARIANTS:
            raise ResultSchemaError(f"variant {data.get('variant')!r} not in {VARIANTS}")
        for key, value in data.items():
            problem = _FIELD_CHECKS[key](value)
            if problem:
                raise ResultSchemaError(f"{key}: {problem}")
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


class ResultWriteError(OSError):
    """The final result file could not be written; the message says where the result was kept instead."""


def write_result(result: RunResult, results_dir: str | Path) -> Path:
    """Write atomically, paths made portable (``portable``): readers see the old file or the complete new one.

    A write that fails (full disk, folder gone read-only) leaves no temporary file; the result is then kept in
    the first place that takes it (the run's output folder, ``$TMPDIR/peftbench-unsaved``, else stderr) and
    ResultWriteError says where, so training is never lost to the last step.
    """
    results_dir = Path(results_dir)
    target = results_dir / result.filename
    text = json.dumps(portable(_jsonable(result.to_dict())), indent=2, allow_nan=False) + "\n"
    try:
        _write_atomically(text, target)
    except OSError as error:
        kept = _keep_unsaved(text, result)
        raise ResultWriteError(
            f"run {result.run_id}: the result could not be written to {target} "
            f"({error.strerror or type(error).__name__}); it is kept at {kept}: move it into {results_dir} "
            "for the readers (leaderboard, resume) to count it"
        ) from error
    return target


def _write_atomically(text: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # never leave a half-written file for readers to trip on
            os.unlink(temp)
        raise


def _keep_unsaved(text: str, result: RunResult) -> str:
    folders = [Path(result.output_dir)] if result.output_dir else []
    folders.append(Path(tempfile.gettempdir()) / "peftbench-unsaved")
    for folder in folders:
        try:
            _write_atomically(text, folder / result.filename)
            return str(folder / result.filename)
        except OSError:
            continue
    sys.stderr.write(text)
    return "stderr (printed above)"


def read_result(path: str | Path) -> RunResult:
    """One result file; every way a file can fail to be one is a ResultSchemaError naming why, so a reader can
    skip it with one line (``scan_results``)."""
    return RunResult.from_dict(load_json(path))


def load_json(path: str | Path) -> Any:
    """A file's JSON, or a ResultSchemaError saying why it has none (the readers of foreign files share it)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ResultSchemaError(f"cannot be read ({error.strerror or type(error).__name__})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ResultSchemaError(f"not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ResultSchemaError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise ResultSchemaError("not a result (nested too deeply)") from None
    return data


def scan_results(
    results_dir: str | Path, foreign: bool = False, pattern: str = "*.json"
) -> tuple[list[tuple[Path, RunResult]], list[tuple[Path, str]]]:
    """Every readable result under a folder with its path, and (path, reason) for each file skipped.

    The one reader of results folders: the leaderboard, compare, init_from, resume and the sweep callbacks all
    call it, so a corrupt file is skipped (and reported, ``skip_lines``) the same way everywhere. ``foreign``
    also reads other benchmarks' result files that ``peftbench.interop`` maps (HF peft's method comparison),
    marked with their source: the leaderboard sets them beside ours; nothing that resumes or trains sees them.
    ``pattern`` narrows the files read by name (a search's trials are ``*__trial.json``).
    """
    read = read_result
    if foreign:
        from peftbench.interop import read_any as read  # imported here: interop builds on this module
    loaded, skipped = [], []
    for path in sorted(Path(results_dir).rglob(pattern)):
        if path.name.startswith(".tmp-"):
            continue
        try:
            loaded.append((path, read(path)))
        except ResultSchemaError as error:
            skipped.append((path, str(error)))
    return loaded, skipped


def skip_lines(skipped: list[tuple[Path, str]]) -> list[str]:
    """One warning per skipped file, naming it and why."""
    return [f"skipped {path}: {reason}" for path, reason in skipped]


# Paths in result files are portable: a path under the installed package reads ``<peftbench>/...``, one under
# the launch directory (the project) ``./...``, one under the home folder ``~/...``; the longest match wins.
PACKAGE_TOKEN, HOME_TOKEN, PROJECT_TOKEN = "<peftbench>", "~", "."


def path_anchors(project: str | Path | None = None) -> list[tuple[str, str]]:
    """(absolute folder, token) pairs, longest folder first; a folder that is the filesystem root is no anchor."""
    folders = [(PACKAGE_DIR, PACKAGE_TOKEN), (Path.home(), HOME_TOKEN)]
    with contextlib.suppress(
        OSError
    ):  # a launch folder deleted under a long run is no anchor, not a lost result
        folders.append((Path(project or Path.cwd()), PROJECT_TOKEN))
    anchors = {}
    for folder, token in folders:
        for spelling in {str(folder), str(Path(folder).resolve())}:
            if Path(spelling).parent != Path(spelling):
                anchors.setdefault(spelling.rstrip(os.sep), token)
    return sorted(anchors.items(), key=lambda item: -len(item[0]))


def portable(value: Any, anchors: list[tuple[str, str]] | None = None) -> Any:
    """``value`` (a result's JSON form) with every machine-local absolute path spelled relative to an anchor
    (``path_anchors``), in values and inside messages alike; strings with no such path are unchanged."""
    anchors = path_anchors() if anchors is None else anchors
    pattern = re.compile(
        r"(?<![\w.~<>-])(" + "|".join(re.escape(folder) for folder, _ in anchors) + r")(?=[/\\\s'\",:;)\]]|$)"
    )
    tokens = dict(anchors)

    def rewrite(node: Any) -> Any:
        if isinstance(node, str):
            return pattern.sub(lambda match: tokens[match.group(1)], node)
        if isinstance(node, dict):
            return {key: rewrite(item) for key, item in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    return rewrite(value) if anchors else value


def locate(recorded: str | Path) -> Path:
    """Where a recorded (portable) path is on this machine: ``<peftbench>/`` in the installed package, ``~/``
    in the home folder, a relative path from the launch directory (the project), an absolute path as it is."""
    text = str(recorded)
    if text == PACKAGE_TOKEN or text.startswith(PACKAGE_TOKEN + "/"):
        return PACKAGE_DIR / text[len(PACKAGE_TOKEN) :].lstrip("/")
    return Path(text).expanduser()


def localize(config: Any) -> Any:
    """A stored config with its package and home tokens expanded, for code that opens its paths again (export
    rebuilds a run from it); relative paths stay relative to the launch directory."""
    if isinstance(config, str):
        if config == PACKAGE_TOKEN or config.startswith((PACKAGE_TOKEN + "/", "~/")) or config == "~":
            return str(locate(config))
        return config
    if isinstance(config, dict):
        return {key: localize(item) for key, item in config.items()}
    if isinstance(config, list):
        return [localize(item) for item in config]
    return config


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


# Interpolations that read the real output locations (a search's choice is read from paths.results_dir): resolved
# on the real config before the paths are masked below.
_RESOLVED_BEFORE_MASKING = ("${peftbench.chosen:",)


def _resolve_path_readers(cfg: DictConfig, masked: DictConfig) -> None:
    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, str(key)))
        elif isinstance(node, str) and node.replace(" ", "").startswith(_RESOLVED_BEFORE_MASKING):
            OmegaConf.update(masked, ".".join(path), OmegaConf.select(cfg, ".".join(path)), merge=False)

    walk(OmegaConf.to_container(masked, resolve=False), ())


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config with output locations masked: what defines the run's identity."""
    masked = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    _resolve_path_readers(cfg, masked)
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
    """Remove the knobs at their neutral defaults and the measurement-only entries (RUN_ID_EXCLUDED_PATHS)."""
    for path, neutral in RUN_ID_NEUTRAL_DEFAULTS.items():
        parent = _parent(data, path)
        if parent is not None and parent[path[-1]] == neutral:
            del parent[path[-1]]
    for path in RUN_ID_EXCLUDED_PATHS:
        parent = _parent(data, path)
        if parent is not None:
            del parent[path[-1]]
    for path, canonical in RUN_ID_PRESENTATION.items():
        parent: Any = data
        for key in path[:-1]:  # the parent must exist; the key itself may be absent (a bar deleted with ~)
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if canonical is None:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = dict(canonical)


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


def recorded_device(result: RunResult) -> dict[str, Any]:
    """What the run recorded of its machine (provenance.device), empty for files without it."""
    return (result.provenance or {}).get("device") or {}


def cpu_model(result: RunResult) -> str | None:
    """The CPU model the run recorded (provenance.device.cpu_model), or None for files without one."""
    return recorded_device(result).get("cpu_model")


def cpu_label(result: RunResult) -> str | None:
    """The CPU a run's speed belongs to: its model, marked ``(bf16 emulated)`` where bf16 autocast ran on a CPU
    without native bf16. A virtual machine's generic name (``Intel(R) Xeon(R) Processor``) need not tell CPUs
    with and without it apart, and on an Ice Lake Xeon without it the tuned study's bf16 jobs trained ~2.6x
    slower than at fp32, so tables that must not pool speeds across CPUs key on this, not on the name alone."""
    model = cpu_model(result)
    emulated = (
        recorded_device(result).get("cpu_bf16_native") is False
        and device_kind(result) == "cpu"
        and str(result.precision or "").startswith("bf16")
    )
    return f"{model} (bf16 emulated)" if model and emulated else model


def device_kind(result: RunResult) -> str:
    """cpu, cuda or mps: where the run trained (older files: cuda when a CUDA device was recorded)."""
    device = recorded_device(result)
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
    """Every readable result under a folder, and (path, reason) for each file skipped (``scan_results``)."""
    loaded, skipped = scan_results(results_dir)
    return [result for _, result in loaded], skipped


def run_results(results_dir: str | Path, run_id: str) -> list[RunResult]:
    """Every readable file of this run id in a results folder (any status, any label), in path order: what a
    resumed sweep and ``peftbench-results status`` look up. An unreadable file is skipped with a warning: as far
    as anyone can tell, its point did not finish."""
    found = []
    for path in sorted(Path(results_dir).glob(f"*__{run_id}*.json")):
        try:
            result = read_result(path)
        except ResultSchemaError as error:
            logging.getLogger("peftbench").warning("skipped %s: %s", path, error)
            continue
        if result.run_id == run_id:
            found.append(result)
    return found


def find_ok_result(
    results_dir: str | Path, run_id: str, variants: tuple[str, ...] = ("default", "trial")
) -> RunResult | None:
    """The finished (status ok) result of this run id in a results folder, if any: what a resumed sweep skips.
    Only the given variants count (a `tuned` file is a copy of a trial, or the report stage's own label)."""
    return next(
        (r for r in run_results(results_dir, run_id) if r.status == "ok" and r.variant in variants), None
    )
