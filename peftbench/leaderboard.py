"""Leaderboards from result files: Markdown, CSV and LaTeX tables, Pareto plots and a one-page report.

``peftbench-leaderboard DIR`` prints one table per (task, model, budget run) with one row per
*configuration* (``results.config_fingerprint``: the config bar seed and paths, plus device kind, precision
and data-order rule), pooled over its seeds. Each row carries a 95 % interval of its headline test metric
(a bootstrap over seeds x test examples when every run stored its predictions, else a t interval over seeds,
and the table says which), a paired test against a reference row (default: the best row) with Holm's
correction across the table, the tie group that follows, and flags (at or below the trivial baseline, still
improving at the end, fewer steps run than planned). Unreadable files, runs that did not finish ok and
duplicate files are listed apart, never averaged in. Search trials are left out (their ``tuned`` pick stands
for them) unless ``--trials``; a method's grid search (peftbench/search.py) shows as three columns of its rows
(the value chosen on validation, the trials, how many lie within a point of the best) and as a sensitivity
plot. ``--out DIR`` writes the tables, the plots and ``report.md``. docs/leaderboard.md describes every figure.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import math
import re
import shlex
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from peftbench import console, stats
from peftbench.console import entry_point
from peftbench.interop.peft_mc import imported_label
from peftbench.results import (
    DATA_ORDER_GLOBAL_RNG,
    DATA_ORDER_SEEDED,
    RunResult,
    config_fingerprint,
    cpu_label,
    device_kind,
    fingerprint_config,
    scan_results,
    skip_lines,
)
from peftbench.search import best_trial, grid_searches, group_identity, lookup, validation_score

ALPHA = 0.05
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: regenerating a leaderboard from the same files gives the same bytes
CONFIDENCE = 0.95
# Method-config keys that document a method rather than configure it: never part of a row label.
META_KEYS = ("name", "paper", "lr_source")
# When several differing keys always move together (the method's lr and the optimizer.lr that follows it, or
# trainer.precision and the recorded precision), the label names one, by this preference.
LABEL_KEY_PREFERENCE = ("precision", "device", "data_order", "optimizer.", "method.")
MEM_SOURCES = {"cpu_rss": "CPU RSS", "cuda_allocated": "CUDA allocated", "cuda_reserved": "CUDA reserved"}
NOT_RANKED = "not ranked"


# --- what a result says about itself ------------------------------------------------------------------------


def headline(result: RunResult) -> tuple[str, float | None]:
    name = result.config.get("task", {}).get("headline", "accuracy")
    value = result.test.get(f"test/{name}")
    return name, None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def steps_run(result: RunResult) -> int | None:
    """Optimizer steps the run took (``budget.steps``; older files: the trainer's global step)."""
    for value in (result.budget.get("steps"), (result.selection or {}).get("global_steps")):
        if _number(value) is not None:
            return int(value)
    return None


def steps_planned(result: RunResult) -> int | None:
    config = result.config or {}
    for value in (
        result.budget.get("max_steps"),
        config.get("trainer", {}).get("max_steps"),
        config.get("task", {}).get("max_steps"),
    ):
        if _number(value) is not None and value > 0:
            return int(value)
    return None


def budget_of(result: RunResult) -> dict[str, Any]:
    """The budget a run *ran*: steps actually taken x effective batch (and what was planned, to flag short runs)."""
    config = result.config or {}
    steps = steps_run(result)
    planned = steps_planned(result)
    steps = steps if steps is not None else planned
    batch = result.budget.get("batch_size") or config.get("task", {}).get("batch_size")
    accumulate = config.get("trainer", {}).get("accumulate_grad_batches") or 1
    world = result.budget.get("world_size") or 1
    effective = batch * accumulate * world if batch else None
    return {"steps": steps, "planned": planned, "batch": effective, "label": f"{steps} steps x {effective}"}


def mem_kind(result: RunResult) -> str:
    """Where the peak memory figure comes from (older files: CUDA allocated when it was recorded, else RSS)."""
    efficiency = result.efficiency or {}
    kind = efficiency.get("peak_mem_kind")
    if kind:
        return str(kind)
    return "cuda_allocated" if "peak_cuda_allocated_mb" in efficiency else "cpu_rss"


def _best_step(result: RunResult) -> int | None:
    selection = result.selection or {}
    if _number(selection.get("best_step")) is not None:
        return int(selection["best_step"])
    match = re.search(r"best-step(\d+)", str(selection.get("best_checkpoint") or ""))
    return int(match.group(1)) if match else None


def convergence(result: RunResult) -> str | None:
    """``not converged``: the chosen checkpoint is the last evaluation and the monitored metric still improved
    at it (over the evaluation before). Older files without a curve: ``best = last eval (no curve stored)``
    when the best checkpoint's step is the final step. None otherwise (or when it cannot be told)."""
    selection = result.selection or {}
    mode = selection.get("mode") or result.config.get("task", {}).get("monitor_mode", "max")
    monitor = selection.get("monitor") or result.config.get("task", {}).get("monitor")
    curve = [c for c in result.curve or [] if _number(c.get(monitor)) is not None and _number(c.get("step"))]
    best = _best_step(result)
    if curve:
        last = curve[-1]
        at_last = selection.get("chosen") == "last" or best == int(last["step"])
        if not at_last:
            return None
        if len(curve) == 1:
            return "best = last eval (one evaluation)"
        sign = 1 if mode == "max" else -1
        return "not converged" if sign * (last[monitor] - curve[-2][monitor]) > 0 else None
    final = steps_run(result)
    if selection.get("chosen") == "last" or (best is not None and final is not None and best >= final):
        return "best = last eval (no curve stored)"
    return None


# --- rows ----------------------------------------------------------------------------------------------------


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def row_fingerprint(result: RunResult) -> str:
    """What a row pools: ``config_fingerprint`` for default runs and trials. A ``tuned`` result's config is the
    point its search chose, which differs per seed; its row is the search instead: the config with the searched
    keys masked (and keys of the same name holding the chosen value, e.g. optimizer.lr following method.meta.lr),
    plus the search definition (sweeper, trials, space)."""
    search = result.search or {}
    if result.variant != "tuned" or not search.get("space"):
        return config_fingerprint(result)
    config = json.loads(json.dumps(result.config or {}, default=str))
    flat = _flatten(config)
    for key in search["space"]:
        chosen = flat.get(key)
        for dotted, value in flat.items():
            if dotted == key or (dotted.split(".")[-1] == key.split(".")[-1] and value == chosen):
                parent = lookup(config, dotted.rsplit(".", 1)[0]) if "." in dotted else config
                if isinstance(parent, dict):
                    parent[dotted.split(".")[-1]] = "<searched>"
    identity = {
        "config": fingerprint_config(config),
        "device": device_kind(result),
        "precision": result.precision or config.get("trainer", {}).get("precision"),
        "data_order": DATA_ORDER_SEEDED if result.schema_version >= 3 else DATA_ORDER_GLOBAL_RNG,
        "search": {k: search.get(k) for k in ("sweeper", "n_trials", "sampler", "direction", "space")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Row:
    """One leaderboard row: the ok runs (one per seed) of one configuration at one task, model and budget."""

    task: str
    model: str
    budget: str
    method: str
    variant: str
    metric: str
    fingerprint: str = ""
    runs: list[RunResult] = field(default_factory=list)
    label: str = ""
    differs: dict[str, Any] = field(default_factory=dict)  # dotted config key -> value, what the label says
    interval: stats.Interval | None = None
    reference: str | None = None  # the label of the row it was tested against
    difference: stats.Interval | None = None
    p: float = math.nan
    p_holm: float = math.nan
    group: str = ""
    baseline: float | None = None
    baseline_method: str = ""
    flags: list[str] = field(default_factory=list)
    pareto: dict[str, float] = field(default_factory=dict)  # plot axis -> probability of being on the front
    search: SearchSummary | None = None  # the method's grid search in the results, when it has one
    # A tuned row against its method's default row in the same table (tuning_gains): what the search bought.
    gain: stats.Interval | None = None
    gain_p: float = math.nan
    gain_p_holm: float = math.nan

    def _values(self, key: str, source: str = "efficiency") -> list[float]:
        values = [_number(getattr(r, source).get(key)) for r in self.runs]
        return [v for v in values if v is not None and not math.isnan(v)]

    def mean_of(self, key: str, source: str = "efficiency") -> float | None:
        values = self._values(key, source)
        return statistics.fmean(values) if values else None

    def score_list(self) -> list[stats.Scores]:
        return [s for s in (stats.scores_of(r, self.metric) for r in self.runs) if s is not None]

    @property
    def scores(self) -> list[float]:
        return [s for s in (headline(r)[1] for r in self.runs) if s is not None]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return stats.summarize(self.scores).mean

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (0 with one seed)."""
        return stats.summarize(self.scores).std

    @property
    def median(self) -> float | None:
        return stats.summarize(self.scores).median

    @property
    def ranked(self) -> bool:
        return self.group not in ("", NOT_RANKED)

    @property
    def seed_only(self) -> bool:
        """The interval covers one source of noise only (marked †): the seeds (no predictions stored) or,
        with one seed, the test examples."""
        return self.interval is not None and not self.interval.method.startswith("bootstrap over seeds x")

    @property
    def examples_only(self) -> bool:
        """One seed with predictions: the interval covers the test set's noise, not the seed's."""
        return self.interval is not None and self.interval.method == "bootstrap over test examples"

    def memory(self) -> dict[str, Any]:
        """Peak memory and its increment over the post-load baseline, from one source only (else "mixed")."""
        kinds = {mem_kind(r) for r in self.runs}
        if len(kinds) != 1:
            return {"kind": "mixed", "peak": None, "increment": None}
        increments = self._values("peak_mem_increment_mb")
        return {
            "kind": kinds.pop(),
            "peak": self.mean_of("peak_mem_mb"),
            "increment": statistics.fmean(increments) if len(increments) == len(self.runs) else None,
        }

    def numbers(self) -> dict[str, Any]:
        """The raw figures (CSV, plots)."""
        interval, difference, memory = self.interval, self.difference, self.memory()
        steps = sorted({s for s in (steps_run(r) for r in self.runs) if s is not None})
        planned = sorted({s for s in (steps_planned(r) for r in self.runs) if s is not None})
        return {
            "task": self.task,
            "model": self.model,
            "budget": self.budget,
            "method": self.method,
            "variant": self.variant,
            "label": self.label,
            "metric": self.metric,
            "mean": self.mean,
            "interval_low": interval.low if interval else None,
            "interval_high": interval.high if interval else None,
            "interval_method": interval.method if interval else None,
            "std": self.std,
            "median": self.median,
            "n": self.n,
            "reference": self.reference,
            "diff": difference.estimate if difference else None,
            "diff_low": difference.low if difference else None,
            "diff_high": difference.high if difference else None,
            "diff_method": difference.method if difference else None,
            "p": None if math.isnan(self.p) else self.p,
            "p_holm": None if math.isnan(self.p_holm) else self.p_holm,
            "group": self.group,
            "baseline": self.baseline,
            "baseline_method": self.baseline_method,
            "flags": "; ".join(self.flags),
            "fingerprint": self.fingerprint,
            "differs": " ".join(f"{k}={_value_text(v)}" for k, v in self.differs.items()),
            "trainable_params": self.mean_of("trainable_params"),
            "trainable_pct": self.mean_of("trainable_ratio_pct"),
            "peak_mem_kind": memory["kind"],
            "peak_mem_mb": memory["peak"],
            "peak_mem_increment_mb": memory["increment"],
            "samples_per_s": self.mean_of("train_samples_per_s"),
            "train_time_s": self.mean_of("train_time_s"),
            # codecarbon's estimates of the fit; absent in older files and where it was not installed
            "train_energy_kwh": self.mean_of("train_energy_kwh"),
            "train_co2_kg": self.mean_of("train_co2_kg"),
            "train_flops_est": self.mean_of("train_flops_est", "budget"),
            "tokens": self.mean_of("tokens", "budget"),
            "steps_run": "/".join(str(s) for s in steps),
            "steps_planned": "/".join(str(s) for s in planned),
            "pareto_p_trainable_pct": self.pareto.get("trainable_pct"),
            "pareto_p_peak_mem": self.pareto.get("peak_mem"),
            "pareto_p_throughput": self.pareto.get("throughput"),
            "seeds": " ".join(str(r.seed) for r in sorted(self.runs, key=lambda r: r.seed)),
            "run_ids": " ".join(r.run_id for r in sorted(self.runs, key=lambda r: r.seed)),
            **self.search_numbers(),
            **self.gain_numbers(),
        }

    def gain_numbers(self) -> dict[str, Any]:
        """The tuning gain's figures (CSV ``gain_*``); empty for a row without one, so tables without tuned and
        default rows keep their fields."""
        if self.gain is None:
            return {}
        return {
            "gain": self.gain.estimate,
            "gain_low": self.gain.low,
            "gain_high": self.gain.high,
            "gain_method": self.gain.method,
            "gain_p": None if math.isnan(self.gain_p) else self.gain_p,
            "gain_p_holm": None if math.isnan(self.gain_p_holm) else self.gain_p_holm,
        }

    def search_numbers(self) -> dict[str, Any]:
        """The search's figures (CSV ``search_*``); empty without a search, so older tables keep their fields."""
        search = self.search
        if search is None:
            return {}
        chosen = chosen_values(self)
        return {
            "search_chosen": " ".join(
                f"{k}={'/'.join(_value_text(v) for v in values)}" for k, values in chosen.items()
            ),
            "search_trials": len(search.trials),
            "search_finished": len(search.finished),
            "search_grid": search.grid,
            "search_within": search.within if search.best_score is not None else None,
            "search_robust": search.robust_share,
            "search_tolerance": search.tolerance,
            "search_best_val": search.best_score,
            "search_lead": search.lead,
            "search_monitor": search.monitor,
        }


@dataclass
class Leaderboard:
    """Rows (sorted per section) and what the reader must be told: duplicates dropped, reference notes."""

    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    alpha: float = ALPHA
    notes: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    # The grid searches per table (the table of the rows that report them; a search no row reports yet: the
    # table its own trials' budget names), for the sensitivity plots.
    searches: dict[tuple[str, str, str], list[SearchSummary]] = field(default_factory=dict)


def _newest_first(result: RunResult) -> tuple:
    return (result.status != "ok", "" if result.ended_at is None else result.ended_at)


def deduplicate(
    loaded: Sequence[tuple[Path, RunResult]],
) -> tuple[list[RunResult], list[str]]:
    """One result per (run id, variant): a file copied to two folders counts once, with one warning line.
    When copies differ (a re-run), the ok one that ended last is kept."""
    by_id: dict[tuple[str, str], list[tuple[Path, RunResult]]] = defaultdict(list)
    for path, result in loaded:
        by_id[(result.run_id, result.variant)].append((path, result))
    kept, warnings = [], []
    for (run_id, variant), copies in by_id.items():
        ordered = sorted(copies, key=lambda c: (c[1].status == "ok", c[1].ended_at or ""), reverse=True)
        kept.append(ordered[0][1])
        if len(copies) > 1:
            result = ordered[0][1]
            paths = ", ".join(str(p) for p, _ in sorted(copies, key=lambda c: str(c[0])))
            warnings.append(
                f"duplicate: run {run_id} ({result.task}/{result.model}/{result.method} seed {result.seed}"
                f"{'' if variant == 'default' else ', ' + variant}) in {len(copies)} files, counted once "
                f"(kept {ordered[0][0]}): {paths}"
            )
    return kept, warnings


@functools.cache
def method_defaults(method: str) -> dict[str, Any]:
    """The method's shipped YAML (conf/method/<method>.yaml) as flattened ``method.*`` keys, interpolations left
    out (they follow other keys, e.g. the model's target modules); empty for a method without a file."""
    from omegaconf import OmegaConf

    from peftbench.resources import config_dir

    try:
        path = config_dir() / "method" / f"{method}.yaml"
        if not path.is_file():
            return {}
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (FileNotFoundError, ValueError):
        return {}
    flat = _flatten(data if isinstance(data, dict) else {}, "method.")
    return {k: v for k, v in flat.items() if not _interpolated(v)}


def _interpolated(value: Any) -> bool:
    """An OmegaConf interpolation anywhere in the value (a list may hold some: houlsby's sites)."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list | tuple):
        return any(_interpolated(v) for v in value)
    return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool | str):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _default_differences(result: RunResult) -> dict[str, Any]:
    """Keys where the run's method config differs from the method's YAML, and optimizer.lr from its lr.

    YAML keys absent from the stored config (added after the run) and documentation keys are ignored."""
    defaults = method_defaults(result.method)
    if not defaults:
        return {}
    config = result.config or {}
    flat = _flatten(config.get("method") or {}, "method.")
    out = {
        k: flat[k]
        for k, v in defaults.items()
        if k in flat and k.split(".")[-1] not in META_KEYS and k != "method.name" and not _same(flat[k], v)
    }
    # The method's recommended lr: method.meta.lr (method.lr in result files written before the meta block).
    lr_key = "method.meta.lr" if "method.meta.lr" in defaults else "method.lr"
    lr, default_lr = lookup(config, "optimizer.lr"), defaults.get(lr_key)
    if lr is not None and default_lr is not None and not _same(lr, default_lr):
        out["optimizer.lr"] = lr
        for key in (
            "method.meta.lr",
            "method.lr",
        ):  # the override was the method's lr; optimizer.lr followed it
            if _same(out.get(key), lr):
                del out[key]
    return out


def _identity_keys(result: RunResult) -> dict[str, Any]:
    """A run's configuration as flattened keys (paths and seed masked), plus device kind and precision."""
    flat = _flatten(fingerprint_config(result.config or {}))
    flat["device"] = device_kind(result)
    flat["precision"] = result.precision or lookup(result.config or {}, "trainer.precision")
    flat["data_order"] = DATA_ORDER_SEEDED if result.schema_version >= 3 else DATA_ORDER_GLOBAL_RNG
    return flat


def _key_rank(key: str) -> tuple[int, str]:
    for rank, prefix in enumerate(LABEL_KEY_PREFERENCE):
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return rank, key
    return len(LABEL_KEY_PREFERENCE), key


def _value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """The shortest trailing part of each dotted key that no other key in the set shares (r, lr, method.lr)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            tail = ".".join(parts[-length:])
            if not any(other != key and ".".join(other.split(".")[-length:]) == tail for other in keys):
                break
        names[key] = tail
    return names


def label_rows(rows: Sequence[Row]) -> None:
    """Labels for one section's rows: the method, its variant, and what differs from the method's defaults or
    between rows of the same method (``lora r=16``, ``lora lr=1e-05``, ``lora precision=32-true``)."""
    by_method: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_method[(row.method, row.variant)].append(row)
    # Beside a tuned row of its method, a default row says it is one (`lora default`); elsewhere the plain
    # method name stays, so tables without tuned rows keep their labels.
    tuned = {row.method for row in rows if row.variant == "tuned"}
    for (method, variant), members in by_method.items():
        identities = [_identity_keys(row.runs[0]) for row in members]
        all_keys = sorted(set().union(*identities))
        varying = [
            k
            for k in all_keys
            if k.split(".")[-1] not in META_KEYS
            and len({_value_text(i.get(k, "<absent>")) for i in identities}) > 1
        ]
        defaults = [_default_differences(row.runs[0]) for row in members]
        keys = sorted(set(varying).union(*defaults))
        # A tuned row's searched keys hold one seed's chosen value (they differ per seed): not a label.
        searched = {
            k
            for row in members
            for r in row.runs
            if r.variant == "tuned"
            for k in (r.search or {}).get("space") or {}
        }
        names = {k.split(".")[-1] for k in searched}
        keys = [k for k in keys if k not in searched and k.split(".")[-1] not in names]
        varying = [k for k in varying if k in keys]
        # Keys that move together across the rows (and from the defaults) are named once.
        chosen: dict[tuple, str] = {}
        for key in sorted(keys, key=_key_rank):
            signature = tuple(
                _value_text(d.get(key, i.get(key, "<absent>")))
                for d, i in zip(defaults, identities, strict=True)
            )
            chosen.setdefault(signature, key)
        keys = sorted(chosen.values())
        names = _short_names(keys)
        suffix = "" if variant == "default" and method not in tuned else f" {variant_text(members[0])}"
        for row, identity, default in zip(members, identities, defaults, strict=True):
            shown = {k: default.get(k, identity.get(k)) for k in keys if k in varying or k in default}
            row.differs = shown
            parts = [f"{names[k]}={_value_text(v)}" for k, v in shown.items()]
            row.label = " ".join([method + suffix, *parts])
            # Another benchmark's row is named as it names itself, marked with its source.
            row.label = imported_label(row.runs[0]) or row.label
    seen = Counter(row.label for row in rows)
    for row in rows:  # two rows never share a label: what still differs is in their fingerprints
        if seen[row.label] > 1:
            row.label += f" #{row.fingerprint[:6]}"


def variant_text(row: Row) -> str:
    """`tuned (8 trials)`: a tuned row names the search budget it used (a sweeper's ``n_trials``; a grid
    search's ``trials_run``, the trials its choice was made from)."""
    trials = {_trial_budget(r.search or {}) for r in row.runs} - {None}
    return f"{row.variant} ({'/'.join(str(t) for t in sorted(trials))} trials)" if trials else row.variant


def _trial_budget(search: dict[str, Any]) -> Any:
    if search.get("n_trials") is not None:
        return search["n_trials"]
    return search.get("trials_run") if search.get("sweeper") == "grid" else None


def _row_budget(runs: Sequence[RunResult]) -> str:
    budgets = [budget_of(r) for r in runs]
    steps = sorted({b["steps"] for b in budgets}, key=lambda s: (s is None, s or 0))
    batches = sorted({str(b["batch"]) for b in budgets})
    text = str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
    return f"{text} steps x {'/'.join(batches)}"


def group_rows(results: Iterable[RunResult], include_trials: bool = False) -> tuple[list[Row], list[str]]:
    """Ok runs grouped by configuration; one run per seed (the newest, with a warning when there were more)."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in results:
        if result.status != "ok" or (result.variant == "trial" and not include_trials):
            continue
        key = (result.task, result.model, result.method, result.variant, row_fingerprint(result))
        groups[key].append(result)
    rows, warnings = [], []
    for (task, model, method, variant, fingerprint), members in groups.items():
        by_seed: dict[int, list[RunResult]] = defaultdict(list)
        for result in members:
            by_seed[result.seed].append(result)
        runs = []
        for seed, same in sorted(by_seed.items()):
            same = sorted(same, key=lambda r: (r.ended_at or "", r.run_id), reverse=True)
            runs.append(same[0])
            if len(same) > 1:
                warnings.append(
                    f"{task}/{model}/{method} configuration {fingerprint} seed {seed}: {len(same)} results "
                    f"(run ids {', '.join(r.run_id for r in same)}); kept {same[0].run_id} (newest ended_at)"
                )
        metric = headline(runs[0])[0]
        rows.append(Row(task, model, _row_budget(runs), method, variant, metric, fingerprint, runs))
    return rows, warnings


# --- grid searches -----------------------------------------------------------------------------------------

# A trial that ran to its end (ok) or stopped on a non-finite loss (diverged) says how the method fares at its
# value; one that failed, ran out of memory or was killed says nothing about the value (a re-run may finish it).
FINISHED = ("ok", "diverged")
# "Within a point of the best" (shared/RESEARCH.md, Fair treatment). Scores in [-1, 1] (accuracy, F1, MCC,
# correlations) are fractions, so a point is 0.01; anything else is taken to be in percent, a point 1.0.
POINT_FRACTION, POINT_PERCENT = 0.01, 1.0
# Float rounding must not push a trial exactly one point below the best out (0.805 - 0.795 > 0.01 in floats).
POINT_SLACK = 1e-9


def point_tolerance(scores: Iterable[float]) -> float:
    """One point of the monitored metric: 0.01 when every score lies in [-1, 1], else 1.0 (a percent scale)."""
    return POINT_FRACTION if all(-1.0 <= s <= 1.0 for s in scores) else POINT_PERCENT


def grid_size(space: Any) -> int | None:
    """Points of a recorded grid (``search.space``: each key's comma-separated values, as a study's
    sweeper.params spell them); None when the grid is unknown (given on the command line, or a range)."""
    if not isinstance(space, dict) or not space:
        return None
    size = 1
    for value in space.values():
        if isinstance(value, list | tuple):
            size *= len(value)
        elif isinstance(value, str) and "(" not in value:
            size *= len([v for v in value.split(",") if v.strip()])
        else:
            return None
    return size


@dataclass
class SearchSummary:
    """One grid search of one method as the leaderboard shows it: its trials (one per grid point), the trial
    its validation score chose (``search.best_trial``) and how many finished trials lie within a point of it.

    Everything here comes from validation scores: a trial's test score is never read, so it cannot colour the
    choice, the robustness or the sensitivity plot."""

    task: str
    model: str
    method: str
    study: str | None
    seed: int
    keys: tuple[str, ...]
    identity: str  # search.group_identity: the configuration bar the searched keys and the seed
    trials: list[RunResult]  # one trial per grid point found, whatever its status
    grid: int | None  # points of the recorded grid (None: unknown)
    monitor: str
    mode: str
    best: RunResult | None
    best_score: float | None
    tolerance: float
    finished: list[RunResult]  # ok or diverged (FINISHED)
    within: int  # finished trials within a point of the best (a diverged trial never is)
    section: tuple[str, str, str]  # the table it belongs to (build: the table of the rows that report it)

    @property
    def robust_share(self) -> float | None:
        """within / finished: the share of the searched values at which the method does about as well."""
        if self.best_score is None or not self.finished:
            return None
        return self.within / len(self.finished)

    @property
    def lead(self) -> float | None:
        """How far the choice's validation score is ahead of the next-best scored trial (0: a tie, which the
        smaller value won); None without a choice and a runner-up. The robustness says how flat the curve is;
        the lead says how narrowly the curve's top was picked, which this study's prompt-tuning search showed can
        matter: a three-sentence lead chose a value that then tested 3.3 points below the default."""
        others = [score for trial, score in self.scored() if trial is not self.best]
        if self.best_score is None or not others:
            return None
        runner_up = max(others) if self.mode == "max" else min(others)
        return self.best_score - runner_up if self.mode == "max" else runner_up - self.best_score

    def validation_size(self) -> int | None:
        """Examples in the validation split the choice was judged on (``data.sizes.validation``), if recorded."""
        sizes = ((self.best.data or {}).get("sizes") or {}) if self.best is not None else {}
        size = sizes.get("validation")
        return int(size) if isinstance(size, int) and size > 0 else None

    def lead_text(self) -> str:
        """The lead as a count of validation examples where the monitor is an accuracy over a known split
        (``+3 of 320``), else in the metric's units; ``0 (tie)`` for a tie."""
        lead = self.lead
        if lead is None:
            return "–"
        size = self.validation_size()
        if size and self.monitor.endswith("accuracy") and self.tolerance == POINT_FRACTION:
            examples = round(lead * size)
            return "0 (tie)" if examples == 0 else f"+{examples} of {size}"
        return "0 (tie)" if abs(lead) < 1e-12 else f"+{lead:.4g}"

    def scored(self) -> list[tuple[RunResult, float]]:
        """The ok trials that have a validation score, with it."""
        pairs = [(t, validation_score(t)) for t in self.finished if t.status == "ok"]
        return [(t, s) for t, s in pairs if s is not None]

    def is_within(self, score: float) -> bool:
        if self.best_score is None:
            return False
        gap = self.best_score - score if self.mode == "max" else score - self.best_score
        return gap <= self.tolerance + POINT_SLACK


def one_per_point(trials: Sequence[RunResult], keys: Sequence[str]) -> list[RunResult]:
    """One trial per point of the grid (the values of the searched keys): a finished one before one that is not,
    then the newest. A point run twice under two run ids (a re-run after the run-id rule changed) would
    otherwise count twice in the trials and the robustness; the fraction is over the grid's points."""
    by_point: dict[str, RunResult] = {}
    for trial in sorted(trials, key=lambda t: (t.status in FINISHED, t.ended_at or "", t.run_id)):
        by_point[json.dumps([lookup(trial.config or {}, k) for k in keys], default=str)] = trial
    return sorted(by_point.values(), key=lambda t: t.run_id)


def summarize_search(group: tuple[Any, ...], trials: Sequence[RunResult]) -> SearchSummary:
    """A ``search.grid_searches`` group as a SearchSummary (see there)."""
    study, task, model, method, seed, keys, identity = group
    trials = one_per_point(trials, keys)
    best = best_trial(trials)
    first = best or trials[0]
    monitor = str(first.selection.get("monitor") or first.config.get("task", {}).get("monitor") or "")
    finished = [t for t in trials if t.status in FINISHED]
    scores = [s for s in (validation_score(t) for t in finished if t.status == "ok") if s is not None]
    summary = SearchSummary(
        task=task,
        model=model,
        method=method,
        study=study,
        seed=seed,
        keys=tuple(keys),
        identity=identity,
        trials=list(trials),
        grid=next((g for g in (grid_size((t.search or {}).get("space")) for t in trials) if g), None),
        monitor=monitor,
        mode=str(first.selection.get("mode") or "max"),
        best=best,
        best_score=validation_score(best) if best is not None else None,
        tolerance=point_tolerance(scores),
        finished=finished,
        within=0,
        section=(task, model, _row_budget([t for t in trials if t.status == "ok"] or list(trials))),
    )
    summary.within = sum(summary.is_within(score) for _, score in summary.scored())
    return summary


def summarize_searches(results: Iterable[RunResult]) -> list[SearchSummary]:
    """Every grid search in the results (``search.grid_searches``), in a fixed order."""
    groups = grid_searches(results)
    return [
        summarize_search(group, groups[group])
        for group in sorted(groups, key=lambda g: json.dumps(g, default=str))
    ]


def _grid_value(value: Any) -> Any:
    """A searched value as a number where it is one (a recorded grid spells its values as Hydra's strings)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _value_order(value: Any) -> tuple[bool, Any]:
    return (not isinstance(value, int | float), value if isinstance(value, int | float) else str(value))


def _grid_values(search: SearchSummary, key: str) -> list[Any]:
    """The searched values of ``key``: the recorded grid where there is one (points not run yet included), else
    the values the trials ran; numbers in order."""
    from peftbench.search import unrun_points

    _, grid = unrun_points(search.trials, key)
    unique: list[Any] = []
    for value in map(_grid_value, list(grid) or [lookup(t.config or {}, key) for t in search.trials]):
        if not any(_same(value, u) for u in unique):
            unique.append(value)
    return sorted(unique, key=_value_order)


def search_table(searches: Sequence[SearchSummary]) -> str:
    """The searches of one table as a grid: a row per method (its own lr), a column per searched value, each cell
    the trial's validation score (the chosen one in bold; ``div.`` diverged, ``failed``/``killed``/``oom``, ``–``
    not run), then the choice, the step its checkpoint came from and the robustness. The sensitivity plot's
    numbers, for a README or a paper; validation only (no test score is read). Single-key searches; a search
    over several keys is left to the CSV."""
    keys = list(dict.fromkeys(s.keys[0] for s in searches if len(s.keys) == 1))
    if len(keys) > 1:  # a table per searched key (a study may search the head's lr and the methods' lr)
        return "\n\n".join(search_table([s for s in searches if s.keys == (key,)]) for key in keys)
    single = [s for s in searches if len(s.keys) == 1]
    if not single:
        return ""
    key = single[0].keys[0]
    values = _grid_values(single[0], key)
    for search in single[1:]:
        values += [v for v in _grid_values(search, key) if not any(_same(v, u) for u in values)]
    values.sort(key=_value_order)
    name = _short_names([key])[key]
    rows = []
    order = sorted(
        single,
        key=lambda s: (
            s.best_score is None,
            -(s.best_score or 0) if s.mode == "max" else (s.best_score or 0),
            s.method,
        ),
    )
    for search in order:
        lr = lookup((search.trials[0].config or {}), "method.meta.lr")
        cells = {
            "method (its lr)": f"{search.method} ({_value_text(lr)})" if lr is not None else search.method
        }
        for value in values:
            trial = next(
                (t for t in search.trials if _same(_grid_value(lookup(t.config or {}, key)), value)), None
            )
            if trial is None:
                text = "–"
            elif trial.status == "ok":
                score = validation_score(trial)
                text = "–" if score is None else f"{score:.4f}"
                if trial is search.best and score is not None:
                    text = f"**{text}**"
            else:
                text = "div." if trial.status == "diverged" else trial.status
            cells[f"{name}={_value_text(value)}"] = text
        best = search.best
        planned = max(search.grid or 0, len(search.trials))
        cells["chosen"] = f"{name}={_value_text(lookup(best.config or {}, key))}" if best is not None else "–"
        if best is not None and len(search.finished) < planned:
            cells["chosen"] += f" (so far: {len(search.finished)}/{planned} run)"
        cells["lead"] = search.lead_text()
        selection = (best.selection or {}) if best is not None else {}
        step, steps = selection.get("best_step"), selection.get("global_steps")
        cells["best step"] = f"{step}/{steps}" if step is not None else "–"
        cells["robust"] = (
            f"{search.within}/{len(search.finished)}" if search.robust_share is not None else "–"
        )
        rows.append(cells)
    monitor = ", ".join(sorted({s.monitor for s in single}))
    note = (
        f"Validation {monitor} of each trial's chosen checkpoint at the search seed, per value of {key}; "
        "**bold**: the choice (best validation score; ties go to the smaller value). lead: how many more validation "
        "examples the choice got right than the next-best trial (in the metric's units where it counts no "
        "examples); a lead of a few examples is a choice another validation split could reverse. best step: where "
        "the chosen trial's checkpoint came from, out of the steps run. robust: finished trials within 1 point of "
        "the best."
    )
    return f"{format_table(rows)}\n\n{note}"


def match_search(row: Row, searches: Sequence[SearchSummary]) -> SearchSummary | None:
    """The grid search of the row's method and configuration: for a tuned row the search its runs' choice came
    from (``search.chosen_run_id``); otherwise the search whose configuration, bar the searched keys and the
    seed, is the row's (``search.group_identity``), of the row's own study when several match."""
    same = [s for s in searches if (s.task, s.model, s.method) == (row.task, row.model, row.method)]
    if not same:
        return None
    chosen = {(r.search or {}).get("chosen_run_id") for r in row.runs if r.variant == "tuned"} - {None}
    for search in same:
        if chosen & {t.run_id for t in search.trials}:
            return search
    config = row.runs[0].config or {}
    matching = [s for s in same if group_identity(config, list(s.keys)) == s.identity]
    studies = {r.study for r in row.runs}
    return next((s for s in matching if s.study in studies), matching[0] if matching else None)


def chosen_values(row: Row) -> dict[str, list[Any]]:
    """The searched keys' values a row shows as chosen: a tuned row the values its runs ran (they can differ
    when the search changed between report runs), any other row its search's best trial's."""
    search = row.search
    if search is None:
        return {}
    tuned = [r for r in row.runs if r.variant == "tuned"]
    sources = tuned or ([search.best] if search.best is not None else [])
    out: dict[str, list[Any]] = {}
    for key in search.keys:
        values: list[Any] = []
        for run in sources:
            value = lookup(run.config or {}, key)
            if not any(_same(value, v) for v in values):
                values.append(value)
        if values:
            out[key] = sorted(values, key=_value_order)
    return out


SEARCH_COLUMNS = ("chosen", "trials", "robust")
GAIN_COLUMNS = ("tuned − default [95% CI]", "p gain (Holm)")


def gain_cells(row: Row) -> dict[str, str]:
    """The tuning gain's two columns: ``–`` on rows that are not a tuned row with a default partner."""
    if row.gain is None:
        return dict.fromkeys(GAIN_COLUMNS, "–")
    return dict(
        zip(GAIN_COLUMNS, (interval_text(row.gain, signed=True), _p_text(row.gain_p_holm)), strict=True)
    )


def search_cells(row: Row) -> dict[str, str]:
    """The three search columns of a row: ``chosen`` (the searched value its validation score picked),
    ``trials`` (finished trials; ``6/7`` when fewer finished than the grid has points) and ``robust``
    (finished trials within a point of the best: ``4/7``). ``–`` for a row whose method has no search."""
    search = row.search
    if search is None:
        return dict.fromkeys(SEARCH_COLUMNS, "–")
    names = _short_names(list(search.keys))
    chosen = " ".join(
        f"{names[k]}={'/'.join(_value_text(v) for v in values)}" for k, values in chosen_values(row).items()
    )
    planned = max(search.grid or 0, len(search.trials))
    finished = len(search.finished)
    return {
        "chosen": chosen or "–",
        "trials": str(finished) if finished == planned else f"{finished}/{planned}",
        "robust": f"{search.within}/{finished}" if search.robust_share is not None else "–",
    }


def search_flags(row: Row) -> list[str]:
    """A tuned row whose runs ran another value than its search's best now (trials added after the report
    stage), or a value at the edge of the grid (the best may lie outside what was searched)."""
    search = row.search
    if row.variant != "tuned" or search is None or search.best is None:
        return []
    flags = []
    names = _short_names(list(search.keys))
    for key, values in chosen_values(row).items():
        best = lookup(search.best.config or {}, key)
        stale = [r for r in row.runs if not _same(lookup(r.config or {}, key), best)]
        if stale:
            ran = "/".join(_value_text(v) for v in values)
            flags.append(
                f"chosen {names[key]}={ran} is not the search's best now ({names[key]}={_value_text(best)}): "
                f"{len(stale)}/{len(row.runs)} runs"
            )
        grid = sorted(
            {v for v in (lookup(t.config or {}, key) for t in search.trials) if _number(v) is not None}
        )
        edges = [
            v
            for v in values
            if len(grid) >= 3 and _number(v) is not None and (_same(v, grid[0]) or _same(v, grid[-1]))
        ]
        for value in edges:
            flags.append(
                f"chosen {names[key]}={_value_text(value)} is at the grid's edge: the best may lie outside the "
                "searched range"
            )
    return flags


def search_footnote(rows: Sequence[Row]) -> str | None:
    """What the search columns mean, in words (under every table that has them)."""
    searches = list({id(r.search): r.search for r in rows if r.search is not None}.values())
    if not searches:
        return None
    keys = ", ".join(sorted({k for s in searches for k in s.keys}))
    monitors = ", ".join(sorted({s.monitor for s in searches}))
    seeds = ", ".join(str(seed) for seed in sorted({s.seed for s in searches}))
    points = " and ".join(
        f"{t:g} ({'scores in [-1, 1]' if t == POINT_FRACTION else 'a percent scale'})"
        for t in sorted({s.tolerance for s in searches})
    )
    return (
        f"chosen / trials / robust: the method's grid search over {keys} at seed {seeds}, judged on validation "
        f"({monitors}), never on test. chosen: the value with the best validation score (a tuned row: the value "
        "its runs ran). trials: finished trials (ok or diverged), out of the grid's points when fewer finished. "
        "robust: finished trials of the method's search whose validation score is within 1 point of the "
        f"search's best (1 point = {points}); a diverged trial is never within. The same for a method's tuned "
        "and default rows: it describes the method's search, not the row."
    )


# --- statistics per section --------------------------------------------------------------------------------


def trivial_baseline(row: Row) -> tuple[float | None, str]:
    """The score of a constant prediction on the test labels: the majority class (classification), the mean
    label (mse), no correlation (pearson/spearman). Without stored labels: a uniform guess for accuracy."""
    metric = row.metric
    with_labels = next((s for s in row.score_list() if s.label is not None), None)
    task = row.runs[0].config.get("task", {})
    classes = task.get("num_labels") or len(task.get("label_names") or []) or None
    if metric in ("pearson", "spearman"):
        return 0.0, "no correlation"
    if with_labels is not None and with_labels.label is not None:
        label = with_labels.label
        if metric == "mse":
            constant = label.astype(float).mean()
            return stats.metric_value(metric, np.full(len(label), constant), label), "mean label"
        if metric in stats.CONFUSION_METRICS or metric == "accuracy":
            values, counts = np.unique(label, return_counts=True)
            pred = np.full_like(label, values[int(counts.argmax())])  # ties: the lowest class id
            return stats.metric_value(metric, pred, label, num_classes=classes), "majority class"
        return None, ""
    if metric == "accuracy" and classes:
        return 1.0 / classes, "uniform guess; labels not stored"
    return None, ""


def _at_baseline(row: Row) -> bool:
    if row.baseline is None or row.interval is None:
        return False
    if stats.higher_is_better(row.metric):
        edge = row.interval.low if row.interval.low is not None else row.interval.estimate
        return edge <= row.baseline
    edge = row.interval.high if row.interval.high is not None else row.interval.estimate
    return edge >= row.baseline


# The linear probe every adapted model must beat (RESEARCH.md: a method at or below the trivial baseline or the
# head-only probe is misconfigured or not converged, and is not ranked).
PROBE_METHOD = "head_only"


def hold_to_probe(rows: Sequence[Row], n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> None:
    """Flag and unrank every row of a section that is not shown above its head-only probe: its paired difference
    to the probe row (same seeds and test examples where stored) has an interval that reaches 0 (with no
    interval, an estimate at or below 0). The probe is the section's strongest ranked head-only row; a section
    without one holds nobody to it."""
    probes = [r for r in rows if r.method == PROBE_METHOD and r.group != NOT_RANKED and r.mean is not None]
    if not probes:
        return
    higher = stats.higher_is_better(probes[0].metric)
    probe = max(probes, key=lambda r: r.mean if higher else -r.mean)  # type: ignore[operator]
    for row in rows:
        if row.method == PROBE_METHOD or row.group == NOT_RANKED or not row.score_list():
            continue
        difference, _ = stats.paired_difference(
            row.score_list(), probe.score_list(), row.metric, "mean", CONFIDENCE, n_resamples, seed
        )
        if higher:
            edge = difference.low if difference.low is not None else difference.estimate
            shown_above = edge > 0
        else:
            edge = difference.high if difference.high is not None else difference.estimate
            shown_above = edge < 0
        if not shown_above:
            row.flags.insert(
                0,
                f"not above the head-only probe {probe.mean:.4f}: diff {interval_text(difference, signed=True)}",
            )
            row.group = NOT_RANKED


def _row_flags(row: Row) -> list[str]:
    flags = []
    if _at_baseline(row):
        flags.append(f"at/below trivial baseline {row.baseline:.4f} ({row.baseline_method})")
    n = len(row.runs)
    states = Counter(convergence(r) for r in row.runs)
    for state in ("not converged", "best = last eval (one evaluation)", "best = last eval (no curve stored)"):
        if states[state]:
            flags.append(f"{state}: {states[state]}/{n} runs")
    short = [(steps_run(r), steps_planned(r)) for r in row.runs]
    short = [(s, p) for s, p in short if s is not None and p is not None and s < p]
    if short:
        ran = sorted({s for s, _ in short})
        planned = sorted({p for _, p in short})
        ran_text = str(ran[0]) if len(ran) == 1 else f"{ran[0]}–{ran[-1]}"
        flags.append(f"ran {ran_text} of {'/'.join(str(p) for p in planned)} steps: {len(short)}/{n} runs")
    return flags + search_flags(row)


def _sort_key(row: Row) -> tuple:
    """Best first in the metric's direction; exact ties by label (never file order)."""
    estimate = row.interval.estimate if row.interval else None
    sign = -1.0 if stats.higher_is_better(row.metric) else 1.0
    return (estimate is None, sign * estimate if estimate is not None else 0.0, row.label)


def analyse_section(
    rows: list[Row],
    reference: str | None = None,
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[list[Row], list[str]]:
    """Intervals, baseline flags, tests against the reference row, Holm, tie groups and order of one section."""
    notes = []
    for row in rows:
        scores = row.score_list()
        row.interval = (
            stats.interval(scores, row.metric, "mean", CONFIDENCE, n_resamples, seed) if scores else None
        )
        row.baseline, row.baseline_method = trivial_baseline(row)
        row.flags = _row_flags(row)
        row.group = NOT_RANKED if row.interval is None or _at_baseline(row) else "candidate"
    hold_to_probe(rows, n_resamples, seed)
    rows = sorted(rows, key=_sort_key)
    candidates = [r for r in rows if r.group == "candidate"]
    if not candidates:
        return rows, notes
    chosen = next((r for r in candidates if r.label == reference), None) if reference else None
    if reference and chosen is None:
        known = next((r for r in rows if r.label == reference), None)
        why = "is not ranked (at/below the trivial baseline)" if known else "is not a row of this table"
        notes.append(f"reference {reference!r} {why}: the best row is the reference")
    name = "reference" if chosen is not None and chosen is not candidates[0] else "best"
    chosen = chosen or candidates[0]
    others = [r for r in candidates if r is not chosen]
    reference_scores = chosen.score_list()
    # A bootstrap p-value is at least 2 / (B + 1), so Holm's smallest adjusted p is m times that: with many rows
    # B = 2000 could never reject. The tests draw enough resamples for Holm to reach alpha / 5.
    test_resamples = max(n_resamples, math.ceil(10 * len(others) / alpha))
    for row in others:
        row.difference, row.p = stats.paired_difference(
            row.score_list(), reference_scores, row.metric, "mean", CONFIDENCE, test_resamples, seed
        )
        row.reference = chosen.label
    for row, adjusted in zip(others, stats.holm([r.p for r in others]), strict=True):
        row.p_holm = adjusted
        row.group = stats.tie_group(row.difference, adjusted, alpha, row.metric)
    chosen.group, chosen.reference = name, chosen.label
    tuning_gains(rows, alpha, n_resamples, seed)
    ordered = [r for r in rows if r.ranked] + [r for r in rows if not r.ranked]
    return ordered, notes


def tuning_gains(
    rows: Sequence[Row], alpha: float = ALPHA, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> None:
    """Each tuned row minus its method's default row in the same table, paired by seed and test example (both
    stages run the same seeds on the same test set), Holm-adjusted over the methods tested: did the search
    change the method's score, beyond the noise? A method with several default rows in the table (other
    configurations) has no unambiguous partner and gets no gain. A row at chance still has one: tuning is what
    may lift it."""
    defaults: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.variant == "default" and row.score_list():
            defaults[row.method].append(row)
    pairs = [
        (row, defaults[row.method][0])
        for row in rows
        if row.variant == "tuned" and row.score_list() and len(defaults[row.method]) == 1
    ]
    resamples = max(n_resamples, math.ceil(10 * len(pairs) / alpha))  # Holm must be able to reach alpha
    for tuned, default in pairs:
        tuned.gain, tuned.gain_p = stats.paired_difference(
            tuned.score_list(), default.score_list(), tuned.metric, "mean", CONFIDENCE, resamples, seed
        )
    for (tuned, _), adjusted in zip(pairs, stats.holm([t.gain_p for t, _ in pairs]), strict=True):
        tuned.gain_p_holm = adjusted


def pareto_probabilities(
    rows: Sequence[Row], n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> str:
    """Each ranked row's bootstrap probability of being on each plot's Pareto front (Row.pareto); returns how
    they were resampled. Memory needs one source across the rows."""
    from peftbench.plots import AXES, axis_values

    ranked = [r for r in rows if r.ranked]
    method = ""
    for stem, _, higher_better in AXES:
        values, _ = axis_values(ranked, stem)
        points = [(row, x) for row, x in zip(ranked, values, strict=True) if x is not None]
        if not points:
            continue
        probabilities, method = stats.pareto_probability(
            [row.score_list() for row, _ in points],
            [x for _, x in points],
            ranked[0].metric,
            lower_cost_is_better=not higher_better,
            n_resamples=n_resamples,
            seed=seed,
        )
        for (row, _), probability in zip(points, probabilities, strict=True):
            row.pareto[stem] = probability
    return method


def sections(rows: Sequence[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """Rows per (task, model, budget): the units that may be compared."""
    grouped: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.task, row.model, row.budget)].append(row)
    return dict(grouped)


def build(
    results: Iterable[RunResult],
    include_trials: bool = False,
    reference: str | None = None,
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    budget: str | None = None,
    pareto: bool = True,
) -> Leaderboard:
    """Rows grouped, labelled, tested and sorted, per section (sections sorted by task, model, budget); each
    row linked to its method's grid search when the results hold one."""
    results = list(results)
    rows, warnings = group_rows(results, include_trials)
    searches = summarize_searches(results)
    for row in rows:
        row.search = match_search(row, searches)
    board = Leaderboard([], warnings, alpha=alpha)
    for key in sorted(sections(rows), key=lambda k: (k[0], k[1], k[2])):
        if budget and key[2] != budget:
            continue
        members = sections(rows)[key]
        label_rows(members)
        members, notes = analyse_section(members, reference, alpha, n_resamples, seed)
        if pareto:
            pareto_probabilities(members, n_resamples, seed)
        if notes:
            board.notes[key] = notes
        board.rows.extend(members)
    board.searches = _searches_by_section(board.rows, searches, budget)
    return board


def _searches_by_section(
    rows: Sequence[Row], searches: Sequence[SearchSummary], budget: str | None
) -> dict[tuple[str, str, str], list[SearchSummary]]:
    """Each search under the table of the first row that reports it; a search no row reports (the search stage
    ran, the report stage not yet) under the table its own ok trials' budget names."""
    placed: dict[tuple[str, str, str], list[SearchSummary]] = defaultdict(list)
    seen: set[int] = set()
    for row in rows:
        if row.search is not None and id(row.search) not in seen:
            seen.add(id(row.search))
            row.search.section = (row.task, row.model, row.budget)
            placed[row.search.section].append(row.search)
    for search in searches:
        if id(search) not in seen and (not budget or search.section[2] == budget):
            placed[search.section].append(search)
    return {key: placed[key] for key in sorted(placed)}


def aggregate(results: Iterable[RunResult], include_trials: bool = False, **options: Any) -> list[Row]:
    """Rows of ok runs, sorted per (task, model, budget) section, best first (see ``build``)."""
    return build(results, include_trials, **options).rows


# --- formatting ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _sig(value: float | None) -> str:
    """Three significant digits: energy spans 1e-6 kWh (a test run) to hundreds (a large fine-tune)."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _count(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def interval_text(interval: stats.Interval | None, signed: bool = False) -> str:
    if interval is None:
        return "–"
    number = (lambda v: f"{v:+.4f}") if signed else (lambda v: f"{v:.4f}")
    if interval.low is None or interval.high is None:
        return number(interval.estimate)
    return f"{number(interval.estimate)} [{number(interval.low)}, {number(interval.high)}]"


def score_text(row: Row, median: bool = False) -> str:
    text = interval_text(row.interval) + ("†" if row.seed_only else "")
    return text + (f" (median {row.median:.4f})" if median and row.n > 1 else "")


def _memory_columns(rows: Sequence[Row]) -> tuple[str, str, bool]:
    """Headers of the two memory columns, and whether cells must name their source (rows differ in it)."""
    kinds = {row.memory()["kind"] for row in rows}
    if len(kinds) == 1 and "mixed" not in kinds:
        source = MEM_SOURCES.get(next(iter(kinds)), next(iter(kinds)))
        return f"peak MiB ({source})", f"+MiB over load ({source})", False
    return "peak MiB", "+MiB over load", True


def _memory_cell(value: float | None, kind: str, tag: bool) -> str:
    if kind == "mixed":
        return "mixed sources"
    text = _fmt(value, 0)
    return f"{text} ({MEM_SOURCES.get(kind, kind)})" if tag and value is not None else text


def display_rows(rows: Sequence[Row], median: bool = False, context: bool = False) -> list[dict[str, str]]:
    """Rows as the strings every table format shows (so Markdown, CSV and LaTeX agree). ``context`` adds the
    task, model and budget columns (a table across sections, as at the end of a sweep)."""
    peak_header, increment_header, tag = _memory_columns(rows)
    searched = any(row.search is not None for row in rows)  # the search columns only where there are searches
    gained = any(row.gain is not None for row in rows)  # the gain columns only beside tuned and default rows
    out = []
    for row in rows:
        numbers, memory = row.numbers(), row.memory()
        cells = {"task": row.task, "model": row.model, "budget": row.budget} if context else {}
        cells.update(
            {
                "row": row.label,
                "group": row.group,
                f"{row.metric} [95% CI]": score_text(row, median),
                "diff vs ref [95% CI]": interval_text(row.difference, signed=True),
                "p (Holm)": _p_text(row.p_holm),
                "n": str(row.n),
                **(search_cells(row) if searched else {}),
                **(gain_cells(row) if gained else {}),
                "trainable": _count(numbers["trainable_params"]),
                "trainable %": _fmt(numbers["trainable_pct"], 3),
                "samples/s": _fmt(numbers["samples_per_s"]),
                peak_header: _memory_cell(memory["peak"], memory["kind"], tag),
                increment_header: _memory_cell(memory["increment"], memory["kind"], tag),
                "time s": _fmt(numbers["train_time_s"]),
                "energy kWh": _sig(numbers["train_energy_kwh"]),
                "CO₂ g": _sig(None if numbers["train_co2_kg"] is None else 1000 * numbers["train_co2_kg"]),
                "flags": "; ".join(row.flags) or "–",
            }
        )
        out.append(cells)
    if context and len({r.metric for r in rows}) > 1:  # one score column for rows of different metrics
        for row, cells in zip(rows, out, strict=True):
            cells["score [95% CI]"] = f"{row.metric} " + cells.pop(f"{row.metric} [95% CI]")
    return out


def comparison_rows(results: Iterable[RunResult], median: bool = False) -> list[dict[str, str]]:
    """Display rows of ok runs across sections, with task, model and budget columns (the end-of-sweep table)."""
    rows = aggregate(results, pareto=False)
    displayed = display_rows(rows, median, context=True)
    columns = list(dict.fromkeys(c for cells in displayed for c in cells))
    return [{c: cells.get(c, "") for c in columns} for cells in displayed]


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """A Markdown table (readable as plain text too); columns are the first row's keys."""
    if not rows:
        return "(no successful runs)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    line = lambda cells: "| " + " | ".join(cells[c].ljust(widths[c]) for c in columns) + " |"  # noqa: E731
    header = line({c: c for c in columns})
    rule = "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|"
    return "\n".join([header, rule, *(line(r) for r in rows)])


def section_footnotes(rows: Sequence[Row], alpha: float = ALPHA) -> list[str]:
    """What the section's intervals and tests are, in words (printed under every table)."""
    lines = []
    intervals = Counter(r.interval.method for r in rows if r.interval)
    for method, count in sorted(intervals.items()):
        mark = "† " if not method.startswith("bootstrap over seeds x") else ""
        lines.append(f"{mark}95 % interval: {method} ({count}/{len(rows)} rows).")
    if any(r.seed_only and not r.examples_only for r in rows):
        lines.append(
            "† Seed-only intervals leave out the test set's own sampling noise (per-example predictions not "
            "stored), so they are too narrow; bootstrap over seeds x test examples needs results of schema 3."
        )
    if any(r.examples_only for r in rows):
        lines.append(
            "† One seed: the interval covers the test set's sampling noise only, not the seed's "
            "(initialisation, dropout, data order), so it is too narrow; run more seeds."
        )
    differences = Counter(r.difference.method for r in rows if r.difference)
    tested = sum(1 for r in rows if r.difference and not math.isnan(r.p))  # what Holm adjusts over
    reference = next((r for r in rows if r.group in ("best", "reference")), None)
    if reference is not None:
        tests = "; ".join(f"{m} ({c} row{'s' if c > 1 else ''})" for m, c in sorted(differences.items()))
        untested = (
            " untested: no test was possible (no group is claimed)."
            if tested < sum(differences.values())
            else ""
        )
        lines.append(
            f"diff = row − {reference.label} (the {reference.group} row); test: {tests or 'none'}; p Holm-adjusted over "
            f"{tested} comparison(s); tied: p >= {alpha:g} (not shown different, which is not "
            f"shown equal).{untested}"
        )
    if any(r.memory()["kind"] != "mixed" and r.memory()["increment"] is None for r in rows):
        lines.append(
            "+MiB over load: – where a run did not record its post-load baseline (result files before schema 3)."
        )
    starts = Counter(
        str(run.provenance["job_start"])
        for row in rows
        if row.memory()["kind"] == "cpu_rss"
        for run in row.runs
        if (run.provenance or {}).get("job_start")
    )
    if len(starts) > 1:  # provenance.job_start, recorded by the subprocess launcher (docs/sweeps.md)
        counted = ", ".join(f"{name} {count}" for name, count in sorted(starts.items()))
        lines.append(
            f"peak MiB (CPU RSS): these runs' processes started in {len(starts)} ways (runs: {counted}). A job "
            "forked from the fork server counts ~100 MB less RSS for the same work than a fresh interpreter; "
            "compare memory across them by +MiB over load."
        )
    cpus = Counter(str(cpu_label(run)) for row in rows for run in row.runs if cpu_label(run))
    # cpu_label: the model, and whether bf16 ran emulated; a long study's sessions may land on different machines
    if len(cpus) > 1:
        counted = ", ".join(f"{name} {count}" for name, count in sorted(cpus.items()))
        lines.append(
            f"samples/s: these runs ran on {len(cpus)} CPU models (runs: {counted}); a row's throughput averages "
            "over the CPUs its runs had, so compare speed only between rows of one CPU model "
            "(provenance.device: cpu_model, cpu_bf16_native)."
        )
    if any(not r.ranked for r in rows):
        lines.append(
            "not ranked: no score, or the interval reaches the trivial baseline, or the row is not shown above the "
            "head-only probe (no test, no group)."
        )
    searched = search_footnote(rows)
    if searched:
        lines.append(searched)
    gains = Counter(r.gain.method for r in rows if r.gain is not None)
    if gains:
        tests = "; ".join(f"{m} ({c} row{'s' if c > 1 else ''})" for m, c in sorted(gains.items()))
        tested = sum(1 for r in rows if r.gain is not None and not math.isnan(r.gain_p))
        lines.append(
            f"tuned − default: a tuned row minus its method's default row (same seeds, same test examples); "
            f"test: {tests}; p Holm-adjusted over {tested} method(s). A gain whose interval holds 0 is not "
            "shown: the search may not have changed the method's score."
        )
    return lines


def markdown(rows: Sequence[Row], median: bool = False, board: Leaderboard | None = None) -> str:
    """One Markdown table per (task, model, budget), headed by what it compares, footnoted by how."""
    parts = []
    for key, members in sections(rows).items():
        task, model, budget = key
        alpha = board.alpha if board else ALPHA
        notes = [*section_footnotes(members, alpha), *((board.notes.get(key, [])) if board else [])]
        footer = "\n".join(f"- {line}" for line in notes)
        parts.append(
            f"### {task} · {model} · {budget}\n\n{format_table(display_rows(members, median))}\n\n{footer}\n"
        )
    return "\n".join(parts) if parts else "(no successful runs)\n"


CSV_FIELDS = (
    "task", "model", "budget", "method", "variant", "label", "metric", "mean", "interval_low", "interval_high",
    "interval_method", "std", "median", "n", "reference", "diff", "diff_low", "diff_high", "diff_method", "p",
    "p_holm", "group", "baseline", "baseline_method", "flags", "fingerprint", "differs", "trainable_params",
    "trainable_pct", "peak_mem_kind", "peak_mem_mb", "peak_mem_increment_mb", "samples_per_s", "train_time_s",
    "train_energy_kwh", "train_co2_kg", "train_flops_est", "tokens", "steps_run", "steps_planned",
    "pareto_p_trainable_pct", "pareto_p_peak_mem", "pareto_p_throughput", "seeds", "run_ids",
)  # fmt: skip


# The search's figures (Row.search_numbers): written only when a row has a search, so a table without
# searches keeps its columns byte for byte.
SEARCH_FIELDS = (
    "search_chosen", "search_trials", "search_finished", "search_grid", "search_within", "search_robust",
    "search_tolerance", "search_best_val", "search_lead", "search_monitor",
)  # fmt: skip


# The tuning gain's figures (Row.gain_numbers): written only when a row has one.
GAIN_FIELDS = ("gain", "gain_low", "gain_high", "gain_method", "gain_p", "gain_p_holm")


def to_csv(rows: Sequence[Row]) -> str:
    """Raw numbers, one line per row (full precision; the Markdown/LaTeX round them)."""
    buffer = io.StringIO()
    fields = CSV_FIELDS + (SEARCH_FIELDS if any(r.search is not None for r in rows) else ())
    fields += GAIN_FIELDS if any(r.gain is not None for r in rows) else ()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.numbers().items()})
    return buffer.getvalue()


# LaTeX specials and the characters of the other formats' text that pdflatex's default fonts lack. < and >
# go to math mode: OT1 text fonts print them as ¡ and ¿.
LATEX_TEXT = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\^{}", "~": r"\~{}", ">=": r"$\geq$", "<=": r"$\leq$", ">": "$>$", "<": "$<$",
    "≥": r"$\geq$", "≤": r"$\leq$", "†": r"$^\dagger$", "–": "--", "−": "$-$", "±": r"$\pm$",
    "×": r"$\times$", "·": r"$\cdot$", "√": r"$\surd$", "₂": r"$_2$",
}  # fmt: skip
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(LATEX_TEXT, key=len, reverse=True)))
BOLD_GROUPS = ("best", "tied")  # tie groups (Row.group) printed in bold, when the reference is the best row


def _latex_escape(text: str) -> str:
    """Plain text as LaTeX text, in one pass (replacing in turn would escape the braces of earlier escapes)."""
    return _LATEX_PATTERN.sub(lambda match: LATEX_TEXT[match.group()], text)


def _latex_number(value: float | None, digits: int = 1) -> str:
    """A plain number with thousands separators (``22,713,090``, ``1,759``); the unit is in the header."""
    return "--" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _latex_interval(interval: stats.Interval | None, signed: bool = False, digits: int = 4) -> str:
    """``$m \\pm h$`` when the interval is symmetric at the printed precision (t intervals), else
    ``$m\\;[lo, hi]$`` (percentile bootstraps are not): a ± would misstate one side."""
    if interval is None:
        return "--"
    number = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: f"{v:.{digits}f}")
    if interval.low is None or interval.high is None:
        return f"${number(interval.estimate)}$"
    below = f"{interval.estimate - interval.low:.{digits}f}"
    if below == f"{interval.high - interval.estimate:.{digits}f}":
        return rf"${number(interval.estimate)} \pm {below}$"
    return rf"${number(interval.estimate)}\;[{number(interval.low)}, {number(interval.high)}]$"


def latex_label(key: tuple[str, str, str], taken: set[str] | None = None) -> str:
    """``tab:<task>-<model>-<budget>`` in lower-case letters, digits and dashes: the same for the same section
    on every run (so ``\\ref`` in a paper survives a regeneration); ``-2``, ``-3`` when two sections collide."""
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(key).lower()).strip("-")
    label, n = f"tab:{slug}", 1
    while taken is not None and label in taken:
        n += 1
        label = f"tab:{slug}-{n}"
    if taken is not None:
        taken.add(label)
    return label


def _flag_marks(members: Sequence[Row]) -> tuple[list[str], list[str]]:
    """Each row's flags as letters with their run counts (``a (3/3)``) and the legend of the letters: a flag's
    full text in every cell would make the column wider than a page."""
    kinds: dict[str, str] = {}
    cells = []
    for row in members:
        parts = []
        for flag in row.flags:
            match = re.fullmatch(r"(.*): (\d+/\d+) runs", flag)
            kind, count = (match.group(1), match.group(2)) if match else (flag, "")
            letter = kinds.setdefault(
                kind, chr(ord("a") + len(kinds)) if len(kinds) < 26 else str(len(kinds))
            )
            parts.append(f"{letter} ({count})" if count else letter)
        cells.append(", ".join(parts) or "--")
    legend = [f"{letter}: {_latex_escape(kind)}" for kind, letter in kinds.items()]
    return cells, legend


def _latex_caption(key: tuple[str, str, str], members: Sequence[Row], alpha: float, bold: bool) -> str:
    task, model, budget = (_latex_escape(part) for part in key)
    reference = next((r for r in members if r.group in ("best", "reference")), None)
    methods = sorted({r.interval.method for r in members if r.interval})
    forms = {
        "pm" if r"\pm" in _latex_interval(r.interval) else "range"
        for r in members
        if r.interval and r.interval.low is not None
    }
    shown = " or ".join(
        text
        for form, text in (("pm", r"mean $\pm$ half-width"), ("range", "mean [low, high]"))
        if form in forms
    )
    text = (
        f"{task}, {model}, {budget}: test {_latex_escape(members[0].metric)} over seeds, "
        f"{shown or 'mean'} of its 95\\,\\% interval ({_latex_escape('; '.join(methods) or 'none')})."
    )
    if reference is not None and bold:
        text += (
            rf" Bold: the best row and the rows tied with it (Holm-adjusted $p \geq {alpha:g}$ against "
            f"{_latex_escape(reference.label)})."
        )
    elif reference is not None:
        text += f" No bold: rows were tested against {_latex_escape(reference.label)}, not the best row."
    return text


def _latex_section(
    key: tuple[str, str, str],
    members: Sequence[Row],
    notes: Sequence[str],
    alpha: float,
    median: bool,
    label: str,
) -> list[str]:
    """One section as a floating ``table``: caption, label, the booktabs tabular and its notes under it."""
    kinds = {row.memory()["kind"] for row in members}
    source = MEM_SOURCES.get(next(iter(kinds)), next(iter(kinds))) if len(kinds) == 1 else None
    tag = source is None or "mixed" in kinds  # rows differ in their memory source: each cell names its own
    unit = "MiB" if tag else f"MiB, {source}"
    flags, legend = _flag_marks(members)
    bold = any(r.group == "best" for r in members)
    extras = [  # columns only some result files have: printed when a row of the section has them
        (name, header, digits)
        for name, header, digits in (
            ("train_energy_kwh", "Energy (kWh)", 4),
            ("train_co2_kg", "CO$_2$ (kg)", 4),
        )
        if any(r.numbers().get(name) is not None for r in members)
    ]
    searched = any(row.search is not None for row in members)  # the search columns, as in display_rows
    header = [
        "Method", "Group", f"Test {_latex_escape(members[0].metric)}", r"Diff.\ vs.\ ref.", "$p$ (Holm)",
        "Seeds", *(("Chosen", "Trials", "Robust") if searched else ()), "Trainable params", r"Trainable (\%)", "Throughput (samples/s)", f"Peak mem.\\ ({unit})",
        f"Mem.\\ over load ({unit})", "Train time (s)", *(h for _, h, _ in extras), "Flags",
    ]  # fmt: skip
    align = "llll" + "r" * (len(header) - 5) + "l"
    body = []
    for row, flag_cell in zip(members, flags, strict=True):
        numbers, memory = row.numbers(), row.memory()

        def memory_cell(value: float | None, memory: dict[str, Any] = memory) -> str:
            if memory["kind"] == "mixed":
                return "mixed sources"
            text = _latex_number(value, 0)
            return f"{text} ({MEM_SOURCES.get(memory['kind'], memory['kind'])})" if tag and value else text

        score = _latex_interval(row.interval)
        if row.seed_only:  # the table's † note, inside the number's math
            score = score[:-1] + r"^\dagger$" if score.endswith("$") else score + r"$^\dagger$"
        if median and row.n > 1:
            score += f" (median {row.median:.4f})"
        p = "--" if math.isnan(row.p_holm) else ("$<0.001$" if row.p_holm < 0.001 else f"{row.p_holm:.3f}")
        trainable = numbers["trainable_params"]
        cells = [
            _latex_escape(row.label), _latex_escape(row.group), score,
            _latex_interval(row.difference, signed=True), p, str(row.n),
            *(_latex_escape(c) for c in (search_cells(row).values() if searched else ())),
            "--" if trainable is None else f"{round(trainable):,}", _latex_number(numbers["trainable_pct"], 3),
            _latex_number(numbers["samples_per_s"]), memory_cell(memory["peak"]),
            memory_cell(memory["increment"]), _latex_number(numbers["train_time_s"]),
            *(_latex_number(numbers.get(name), digits) for name, _, digits in extras), flag_cell,
        ]  # fmt: skip
        if bold and row.group in BOLD_GROUPS:  # \boldmath: \textbf alone leaves $...$ in the normal weight
            cells = [rf"\textbf{{\boldmath{c}}}" if "$" in c else rf"\textbf{{{c}}}" for c in cells]
        body.append(" & ".join(cells) + r" \\")
    if legend:
        notes = [*notes, "Flags (runs of the row affected): " + "; ".join(legend) + "."]
    return [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{_latex_caption(key, members, alpha, bold)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\smallskip",
        r"{\footnotesize\raggedright",
        *(f"{note}\\par" for note in notes),
        "}",
        r"\end{table}",
    ]


def to_latex(rows: Sequence[Row], median: bool = False, board: Leaderboard | None = None) -> str:
    """One ``table`` float per (task, model, budget), ready to ``\\input`` into a paper: caption (what is
    compared, the metric, the interval), a deterministic ``\\label``, the best row and those tied with it in
    bold, intervals as ``$m \\pm h$`` (or ``$m\\;[lo, hi]$`` when asymmetric), units in the headers and plain
    numbers in the cells, the section notes under the table. Needs ``\\usepackage{booktabs}`` only.
    ``board`` supplies alpha and the per-section notes (a reference that was not found)."""
    alpha = board.alpha if board else ALPHA
    taken: set[str] = set()
    blocks = []
    for key, members in sections(rows).items():
        notes = [*section_footnotes(members, alpha), *(board.notes.get(key, []) if board else [])]
        # The LaTeX header of the increment column is "Mem. over load" (its unit in parentheses).
        escaped = [_latex_escape(note.replace("+MiB over load:", "Mem. over load:")) for note in notes]
        blocks.append(
            "\n".join(_latex_section(key, members, escaped, alpha, median, latex_label(key, taken)))
        )
    return "\n\n".join(blocks) + "\n" if blocks else "% (no successful runs)\n"


def failed_lines(results: Iterable[RunResult]) -> list[str]:
    return [
        f"{r.status}: {r.task}/{r.model}/{r.method} seed {r.seed} ({r.run_id}): {r.error}"
        for r in results
        if r.status != "ok"
    ]


METHOD_TEXT = (
    "Rows are configurations: ok runs with the same configuration fingerprint (the resolved config without "
    "seed and output paths, plus device kind, precision and data-order rule), one run per seed. The label "
    "names what differs from the method's shipped defaults or between rows of one method. Budget: optimizer "
    "steps actually run x effective batch; rows are compared only within one task, model and budget. "
    "Score: headline test metric of the checkpoint chosen by validation, mean over seeds with a 95 % "
    "interval: a percentile bootstrap over seeds x test examples ({n} resamples, seed {seed}; the metric "
    "recomputed from per-example predictions) when every run stored them, else a t interval over seeds "
    "(marked †; it ignores test-set noise). diff: the row minus the reference row (default the best row), "
    "a paired bootstrap (same seeds, same resampled examples) or, without predictions, Welch's t test over "
    "seeds; p-values Holm-adjusted across each table; a row is tied with the reference when its adjusted "
    "p >= {alpha:g}. Rows whose interval reaches the trivial baseline (majority class of the test labels; "
    "a uniform guess when labels are not stored) are flagged and not ranked, and so are rows not shown above "
    "the table's head-only probe (their paired difference to it reaches 0). Flags also mark runs whose "
    "chosen checkpoint is the last evaluation on a still-rising curve, and runs that took fewer steps than "
    "planned. Memory: mean peak of one source (never averaged across sources) and its increment over the "
    "loaded model; throughput and time: means over the same runs. Pareto plots: error bars are the row "
    "intervals; each point's number is the share of bootstrap resamples in which it is on the front."
)


SEARCH_TEXT = (
    "Grid searches: a method searched over a grid of values (peftbench/search.py, variant trial) chose the "
    "value with the best validation score at its search seed; its tuned row ran that value at other seeds, its "
    "default row the method's own defaults. The columns chosen, trials and robust describe that search (the "
    "footnote under each table says how); sensitivity plots (sensitivity_<table>.png) draw each method's "
    "validation score against the searched learning rate, the chosen trial starred and the band within 1 point "
    "of the best shaded. Test scores select nothing."
)
SEARCH_ONLY_TEXT = (
    "These searches have trials but no tuned or default rows yet (run the report stage): their sensitivity "
    "plot only."
)


def write_outputs(
    rows: Sequence[Row],
    results: Sequence[RunResult],
    skipped: Sequence[tuple[Path, str]],
    out_dir: Path,
    source: Path,
    median: bool = False,
    plots: bool = True,
    board: Leaderboard | None = None,
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    html: bool = True,
    files: Sequence[tuple[Path, RunResult]] | None = None,
) -> dict[str, Path]:
    """Tables (md, csv, tex), Pareto plots, memory-breakdown bars and the grid searches' sensitivity plots
    (png, svg; the searches come from ``board``), the interactive leaderboard.html (``html``; it links each
    run to its file in ``files``, the (path, result) pairs read, rescanned from ``source`` when not given)
    and report.md under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "markdown": out_dir / "leaderboard.md",
        "csv": out_dir / "leaderboard.csv",
        "latex": out_dir / "leaderboard.tex",
    }
    written["markdown"].write_text(markdown(rows, median, board))
    written["csv"].write_text(to_csv(rows))
    written["latex"].write_text(to_latex(rows, median, board=board))
    if html:  # not tied to plots: the page draws its own (plotly), so --no-plots keeps it
        from peftbench.page import write_page

        files = scan_results(source)[0] if files is None else files
        written["html"] = write_page(rows, files, out_dir, source, len(results), median, board, alpha)
    figures: dict[tuple[str, str, str], list[Path]] = {}
    searches = board.searches if board else {}
    if plots:
        from peftbench.plots import memory_plot, pareto_plots, sensitivity_plot

        for key, members in sections(rows).items():
            figures[key] = pareto_plots(members, out_dir) + memory_plot(members, out_dir)
        for key, found in searches.items():
            figures.setdefault(key, []).extend(sensitivity_plot(found, out_dir))
    skipped_note = f"; {len(skipped)} file(s) skipped, listed at the end" if skipped else ""
    report = [f"# peftbench leaderboard\n\nFrom `{source}`: {len(results)} result file(s){skipped_note}.\n"]
    report.append(METHOD_TEXT.format(n=n_resamples, seed=seed, alpha=alpha) + "\n")
    if searches:
        report.append(SEARCH_TEXT + "\n")
    if html:
        report.append("Interactive page (sort, filter, plot): [leaderboard.html](leaderboard.html)\n")
    for key, members in sections(rows).items():
        task, model, budget = key
        notes = [*section_footnotes(members, alpha), *((board.notes.get(key, [])) if board else [])]
        report.append(f"## {task} · {model} · {budget}\n\n{format_table(display_rows(members, median))}\n")
        report.append("\n".join(f"- {line}" for line in notes) + "\n")
        fallback = [r.label for r in members if r.seed_only and not r.examples_only]
        if fallback:
            report.append(
                f"Seed-only intervals (no per-example predictions): {len(fallback)}/{len(members)} rows"
                + (" (all)." if len(fallback) == len(members) else f": {', '.join(fallback)}.")
                + "\n"
            )
        for path in figures.get(key, []):
            if path.suffix == ".png":
                report.append(f"![{path.stem}]({path.name})\n")
        grid = search_table(searches.get(key, []))
        if grid:
            report.append(f"### The grid searches\n\n{grid}\n")
    for key in (k for k in searches if k not in sections(rows)):
        report.append(f"## Searches without reported rows: {' · '.join(key)}\n\n{SEARCH_ONLY_TEXT}\n")
        report.extend(
            f"![{path.stem}]({path.name})\n" for path in figures.get(key, []) if path.suffix == ".png"
        )
        grid = search_table(searches[key])
        if grid:
            report.append(f"{grid}\n")
    if board and board.warnings:
        report.append("## Duplicates\n\n" + "\n".join(f"- {line}" for line in board.warnings) + "\n")
    failed = failed_lines(results)
    if failed:
        report.append("## Runs that did not finish\n\n" + "\n".join(f"- {line}" for line in failed) + "\n")
    if skipped:
        report.append(
            "## Files skipped\n\n" + "\n".join(f"- `{path}`: {reason}" for path, reason in skipped) + "\n"
        )
    written["report"] = out_dir / "report.md"
    written["report"].write_text("\n".join(report))
    return written


EXAMPLES = (
    "peftbench-leaderboard results/cpu_minilm_mr/runs  # the table, printed",
    "peftbench-leaderboard results/cpu_minilm_mr/runs --no-plots --out /tmp/board  # + md/csv/tex/html files",
    "peftbench-leaderboard results/compare_all_methods/runs --reference full --columns row,group,n  # fewer columns",
    "peftbench-leaderboard --readme README.md --check  # are the README's generated tables current?",
)


def _parser() -> argparse.ArgumentParser:
    parser = console.parser("peftbench-leaderboard", __doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "results_dir", type=Path, nargs="?", help="folder of result JSON files (searched recursively)"
    )
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--budget", help="only this budget, as printed (e.g. '400 steps x 16')")
    parser.add_argument("--median", action="store_true", help="also show the median over seeds")
    parser.add_argument("--trials", action="store_true", help="also list search trials (variant trial)")
    parser.add_argument(
        "--reference", metavar="LABEL", help="row label every row is tested against (default: the best row)"
    )
    parser.add_argument(
        "--alpha", type=float, default=ALPHA, help=f"level of the Holm-adjusted tie test (default {ALPHA})"
    )
    parser.add_argument(
        "--resamples", type=int, default=N_RESAMPLES, help=f"bootstrap resamples (default {N_RESAMPLES})"
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=BOOTSTRAP_SEED,
        help=f"bootstrap random seed (default {BOOTSTRAP_SEED})",
    )
    parser.add_argument(
        "--per-method",
        action="store_true",
        help="show one row per method: its tuned row where it has one (the tests still run over every row)",
    )
    parser.add_argument(
        "--columns",
        metavar="A,B,...",
        type=lambda text: [c.strip() for c in text.split(",")],
        help="show only these columns of the printed table, in this order",
    )
    parser.add_argument(
        "--searches",
        action="store_true",
        help="print each table's grid searches (validation score per searched value) instead of its rows",
    )
    parser.add_argument(
        "--costs",
        action="store_true",
        help="print the compute the runs cost (jobs, wall time, samples/s, job hours per method and CPU model)",
    )
    parser.add_argument("--out", type=Path, help="write leaderboard.{md,csv,tex}, plots and report.md here")
    parser.add_argument("--no-plots", action="store_true", help="with --out: no png/svg figures")
    parser.add_argument("--no-html", action="store_true", help="with --out: no leaderboard.html page")
    parser.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help="rewrite the generated tables in FILE (blocks that name their own arguments; see docs/leaderboard.md)",
    )
    parser.add_argument(
        "--check", action="store_true", help="with --readme: only report stale blocks (exit 1)"
    )
    return parser


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.results_dir is None:
        parser.error("a results folder is needed (or --readme FILE)")
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a folder")
    if not 0 < args.alpha < 1:
        parser.error(f"--alpha {args.alpha}: a level in (0, 1)")
    if args.resamples < 100:
        parser.error(f"--resamples {args.resamples}: at least 100")
    return args


def _load(args: argparse.Namespace) -> tuple[Leaderboard, list[RunResult], list[RunResult], list[Any]]:
    """The board the arguments describe, the results it was built from, every file read, and the skipped ones."""
    loaded, skipped = scan_results(args.results_dir, foreign=True)  # peft-mc files become marked rows too
    results, duplicates = deduplicate(loaded)
    results = [
        r
        for r in results
        if (not args.task or r.task == args.task) and (not args.model or r.model == args.model)
    ]
    board = build(
        results,
        include_trials=args.trials,
        reference=args.reference,
        alpha=args.alpha,
        n_resamples=args.resamples,
        seed=args.bootstrap_seed,
        budget=args.budget,
    )
    board.warnings[:0] = duplicates
    return board, results, loaded, skipped


def per_method(rows: Sequence[Row]) -> list[Row]:
    """The headline's rows: a method with a tuned row shows that row alone (its default and trial rows stay in
    the full table); a method without one keeps its rows. Order and groups are the full table's: the tests ran
    over every row."""
    tuned = {(r.task, r.model, r.budget, r.method) for r in rows if r.variant == "tuned"}
    return [r for r in rows if r.variant == "tuned" or (r.task, r.model, r.budget, r.method) not in tuned]


def shown_table(rows: Sequence[Row], columns: Sequence[str] | None, median: bool = False) -> str:
    """One section's table, restricted to ``columns`` (names as the full table heads them) in that order."""
    displayed = display_rows(rows, median)
    if columns:
        available = list(displayed[0]) if displayed else []
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise ValueError(f"--columns: no column {unknown[0]!r}; this table has: {', '.join(available)}")
        displayed = [{c: cells[c] for c in columns} for cells in displayed]
    return format_table(displayed)


def block_text(argv: Sequence[str], base: Path) -> str:
    """What one README block holds: the tables (and their footnotes) of ``peftbench-leaderboard ARGV``, with
    the results folder read relative to the README's own folder."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.out or args.readme or args.check:
        raise ValueError("a README block takes no --out, --readme or --check")
    if args.results_dir is not None and not args.results_dir.is_absolute():
        args.results_dir = base / args.results_dir
    board, results, *_ = _load(_checked(parser, args))
    if args.costs:
        return cost_table(results)
    if args.searches:
        return searches_text(board) or "(no grid searches)"
    parts = []
    several = len(sections(board.rows)) > 1
    for key, members in sections(board.rows).items():
        shown = per_method(members) if args.per_method else members
        notes = [*section_footnotes(members, board.alpha), *board.notes.get(key, [])]
        notes = [line for line in notes if _footnote_shown(line, args.columns)]
        heading = f"**{' · '.join(key)}**\n\n" if several else ""
        footer = "\n".join(f"- {line}" for line in notes)
        parts.append(f"{heading}{shown_table(shown, args.columns, args.median)}\n\n{footer}")
    return "\n\n".join(parts) if parts else "(no successful runs)"


# Footnotes that explain one column only (by their opening words), left out of a table that does not show it.
COLUMN_FOOTNOTES = {
    "+MiB over load": "+MiB",
    "chosen / trials / robust": "chosen",
    "tuned − default": "tuned − default",
    "samples/s: these runs ran on": "samples/s",
}


def _footnote_shown(line: str, columns: Sequence[str] | None) -> bool:
    for opening, column in COLUMN_FOOTNOTES.items():
        if line.startswith(opening) and columns is not None:
            return any(c.startswith(column) for c in columns)
    return True


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.readme is not None:
        if args.results_dir is not None or args.out:
            parser.error(
                "--readme rewrites the blocks of FILE from their own arguments: no results folder or --out"
            )
        return refresh_readme(args.readme, check=args.check)
    if args.check:
        parser.error("--check goes with --readme FILE")
    board, results, loaded, skipped = _load(_checked(parser, args))
    if args.costs:
        print(cost_table(results))
    elif args.searches:
        print(searches_text(board) or "(no grid searches)")
    elif args.columns or args.per_method:
        for members in sections(board.rows).values():
            try:
                print(
                    shown_table(
                        per_method(members) if args.per_method else members, args.columns, args.median
                    )
                )
            except ValueError as error:
                parser.error(str(error))
            print()
    else:
        print(markdown(board.rows, args.median, board))
    for line in failed_lines(results):
        print(line)
    for line in board.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in skip_lines(skipped):  # one line per corrupt or foreign file; the report counts them
        print(f"warning: {line}", file=sys.stderr)
    if args.out:
        written = write_outputs(
            board.rows,
            results,
            skipped,
            args.out,
            args.results_dir,
            args.median,
            plots=not args.no_plots,
            html=not args.no_html,
            files=loaded,
            board=board,
            alpha=args.alpha,
            n_resamples=args.resamples,
            seed=args.bootstrap_seed,
        )
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


# --- compute spent ----------------------------------------------------------------------------------------------
def _job_seconds(result: RunResult) -> float | None:
    """A job's wall time from its result's timestamps (model load, training, validation and test included)."""
    from datetime import datetime

    try:
        return (
            datetime.fromisoformat(result.ended_at) - datetime.fromisoformat(result.started_at)
        ).total_seconds()
    except (TypeError, ValueError):  # a result without both timestamps (or a foreign file) has no job time
        return None


def _span(values: Sequence[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    return (
        f"{low:,.{digits}f}"
        if round(low, digits) == round(high, digits)
        else f"{low:,.{digits}f}–{high:,.{digits}f}"
    )


def cost_table(results: Iterable[RunResult]) -> str:
    """What a study's runs cost, per method and CPU model: jobs by variant, each job's wall time, its training
    throughput, and the job hours in all. One job counts once however many variants its result serves. The
    study README's cost table is this, generated (``--costs``), so the compute a closing note quotes is read from
    the files, and throughput is only set beside throughput of the same CPU model (no table here averages across
    CPUs: a long study's sessions may land on different machines)."""
    jobs: dict[tuple[str, str | None], RunResult] = {}
    variants: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for result in results:
        if result.started_at is None:
            continue
        key = (result.run_id, result.started_at)
        jobs.setdefault(key, result)
        variants[key].add(result.variant)
    groups: dict[tuple[str, str], list[tuple[RunResult, set[str]]]] = defaultdict(list)
    for key, result in jobs.items():
        cpu = str(cpu_label(result) or "unrecorded")
        groups[(cpu, result.method)].append((result, variants[key]))
    if not groups:
        return "(no runs with timestamps)"
    rows, totals = [], defaultdict(lambda: [0, 0.0])
    for (cpu, method), members in groups.items():
        seconds = [s for s in (_job_seconds(r) for r, _ in members) if s is not None]
        speed = [
            float(r.efficiency["train_samples_per_s"])
            for r, _ in members
            if r.efficiency.get("train_samples_per_s")
        ]
        kinds = Counter(v for _, vs in members for v in vs)
        rows.append(
            (
                cpu,
                statistics.median(seconds) if seconds else math.inf,
                {
                    "method": method,
                    "CPU": cpu,
                    "jobs": str(len(members)),
                    "of which": ", ".join(f"{count} {name}" for name, count in sorted(kinds.items())),
                    "wall s per job": _span(seconds) if seconds else "–",
                    "samples/s": _span(speed) if speed else "–",
                    "job hours": f"{sum(seconds) / 3600:.2f}",
                },
            )
        )
        totals[cpu][0] += len(members)
        totals[cpu][1] += sum(seconds)
    rows.sort(key=lambda row: (row[0], row[1], row[2]["method"]))
    table = [cells for _, _, cells in rows]
    blank = dict.fromkeys(table[0], "")
    for cpu, (count, seconds) in sorted(totals.items()):
        table.append(
            {
                **blank,
                "method": "**all**",
                "CPU": cpu,
                "jobs": str(count),
                "job hours": f"{seconds / 3600:.2f}",
            }
        )
    if len(totals) > 1:
        count = sum(c for c, _ in totals.values())
        hours = sum(s for _, s in totals.values()) / 3600
        table.append(
            {
                **blank,
                "method": "**all**",
                "CPU": "every CPU",
                "jobs": str(count),
                "job hours": f"{hours:.2f}",
            }
        )
    return (
        format_table(table)
        + "\n\nOne row per method and CPU model; rows ordered by CPU, then median job time. wall s per job: from the "
        "result's start to its end (load, training, validations and test; the interpreter's start-up before it is "
        "not counted). samples/s: training steps only (eff/train_samples_per_s). Jobs that ran side by side each "
        "count their own wall time."
    )


def searches_text(board: Leaderboard) -> str:
    """Every table's grid searches (``search_table``), under a bold ``task · model · budget`` line when there
    are several."""
    parts = []
    for key, found in board.searches.items():
        table = search_table(found)
        if table:
            parts.append((f"**{' · '.join(key)}**\n\n" if len(board.searches) > 1 else "") + table)
    return "\n\n".join(parts)


# --- generated tables inside a document ----------------------------------------------------------------------
# A block is two HTML comments (invisible once rendered) around what peftbench-leaderboard prints for the
# arguments the opening comment holds, so the README's headline is regenerated from the study, never retyped.
BLOCK_OPEN = re.compile(r"^<!-- peftbench-leaderboard (?P<args>.+?) -->\n", re.MULTILINE)
BLOCK_CLOSE = "<!-- /peftbench-leaderboard -->"


def refresh_text(text: str, render: Callable[[list[str]], str]) -> tuple[str, list[str]]:
    """``text`` with every block's content replaced by ``render(its arguments)``; and the arguments of the
    blocks whose content changed."""
    out, stale, position = [], [], 0
    for opening in BLOCK_OPEN.finditer(text):
        if opening.start() < position:
            continue
        close = text.find(BLOCK_CLOSE, opening.end())
        if close < 0:
            raise ValueError(f"block {opening.group(0).strip()} has no closing {BLOCK_CLOSE}")
        argv = shlex.split(opening.group("args"))
        content = render(argv).rstrip("\n") + "\n"
        if text[opening.end() : close] != content:
            stale.append(opening.group("args"))
        out += [text[position : opening.end()], content]
        position = close
    out.append(text[position:])
    return "".join(out), stale


def refresh_readme(path: Path, check: bool = False) -> int:
    """Rewrite (or, with ``check``, only compare) every generated block of ``path``; 1 when a block was stale
    under ``check``, or when the file has no block at all (a typo in the marker would otherwise pass)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        print(f"peftbench-leaderboard: --readme {path}: {error.strerror}", file=sys.stderr)
        return 2
    if not BLOCK_OPEN.search(text):
        print(
            f"peftbench-leaderboard: --readme {path}: no '<!-- peftbench-leaderboard ARGS -->' block",
            file=sys.stderr,
        )
        return 1
    try:
        new, stale = refresh_text(text, lambda argv: block_text(argv, path.parent))
    except (ValueError, SystemExit) as error:
        print(f"peftbench-leaderboard: --readme {path}: {error}", file=sys.stderr)
        return 2
    for args in stale:
        print(f"{'stale' if check else 'rewrote'}: peftbench-leaderboard {args}")
    if check:
        return 1 if stale else 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
