"""Grid searches that choose on validation, and the later stage that runs their choice at fresh seeds.

A tuned comparison has two stages, both ordinary multiruns (resumable by run id, one result per job):

1. **search**: every method over the same grid (``sweep.search: [optimizer.lr_factor]``, a log grid of factors
   on the method's own lr) at one seed (``sweep.search_seed``). Its jobs are recorded as variant ``trial``.
2. **report**: ``optimizer.lr_factor: ${peftbench.chosen:optimizer.lr_factor}``. The resolver reads the search's
   trials from the results folder and returns the value of the trial with the best *validation* score. These
   runs, at other seeds, are variant ``tuned``; only their test scores are reported.

Test scores never enter the choice. Hydra's own sweepers either search without a fixed budget per group
(Optuna: a TPE state per study) or do not mark trials; a fixed grid keeps every method's budget equal by
construction and makes the study resumable point by point, which is why this is written here.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError
from peftbench.results import RunResult, fingerprint_config, scan_results, seed_interpolations

CHOSEN_RESOLVER = "peftbench.chosen"


def _drop_path(config: dict[str, Any], dotted: str) -> None:
    node: Any = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


def _set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[last] = value


def group_identity(
    config: dict[str, Any], searched: Sequence[str], seed_paths: list[tuple[str, ...]] | None = None
) -> str:
    """What the trials of one search share: the stored (resolved) config bar seed, paths, presentation and the
    searched keys. 12 hex digits, like a run id. ``seed_paths``: the keys that follow the seed (``${seed}``);
    None guesses them from the values, which is safe only among runs at one seed."""
    identity = fingerprint_config(copy.deepcopy(config), seed_paths)
    for key in searched:
        _drop_path(identity, key)
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def search_group(result: RunResult) -> tuple[Any, ...] | None:
    """The search a grid trial belongs to (study, task, model, method, seed, config bar the searched keys), or
    None for a result that is no grid trial."""
    search = result.search or {}
    if result.variant != "trial" or search.get("sweeper") != "grid":
        return None
    keys = list(search.get("keys") or [])
    return (
        result.study,
        result.task,
        result.model,
        result.method,
        result.seed,
        tuple(keys),
        group_identity(result.config, keys),
    )


def validation_score(result: RunResult) -> float | None:
    """The monitored validation metric of the run's chosen checkpoint (None when absent or NaN)."""
    monitor = result.selection.get("monitor") or result.config.get("task", {}).get("monitor")
    value = result.val_best.get(monitor) if monitor else None
    return None if value is None or math.isnan(value) else float(value)


def best_trial(trials: Sequence[RunResult]) -> RunResult | None:
    """The finished trial with the best validation score (direction from its selection mode); ties go to the
    smaller value of the searched keys' first key, so a re-run chooses the same trial whatever the file order."""
    scored = [(t, validation_score(t)) for t in trials if t.status == "ok"]
    scored = [(t, s) for t, s in scored if s is not None]
    if not scored:
        return None
    sign = 1 if scored[0][0].selection.get("mode", "max") == "max" else -1

    def order(pair: tuple[RunResult, float]) -> tuple[float, float, str]:
        trial, score = pair
        keys = (trial.search or {}).get("keys") or []
        first = lookup(trial.config, keys[0]) if keys else None
        return (-sign * score, float(first) if isinstance(first, int | float) else math.inf, trial.run_id)

    return min(scored, key=order)[0]


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None where the path stops (result configs are plain nested dicts)."""
    node: Any = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def grid_searches(results: Iterable[RunResult]) -> dict[tuple[Any, ...], list[RunResult]]:
    """Grid trials grouped by search (see ``search_group``)."""
    groups: dict[tuple[Any, ...], list[RunResult]] = defaultdict(list)
    for result in results:
        key = search_group(result)
        if key is not None:
            groups[key].append(result)
    return dict(groups)


# Trial files by name (RunResult.filename gives every non-default variant its suffix).
TRIAL_FILES = "*__trial.json"


def _searches_in(results_dir: Path) -> dict[tuple[Any, ...], list[RunResult]]:
    """The grid searches recorded under a results folder. A report job asks several times (resolving its config,
    its run id, its result's record) and a study folder holds hundreds of files with per-example predictions:
    only trial files are read, and they are read again only when one of them changed."""
    if not results_dir.is_dir():
        return {}
    files = tuple(
        (str(path), stat.st_mtime_ns, stat.st_size)
        for path in sorted(results_dir.rglob(TRIAL_FILES))
        for stat in [path.stat()]
    )
    return _searches_of(str(results_dir), files)


@functools.lru_cache(maxsize=8)
def _searches_of(
    results_dir: str, files: tuple[tuple[str, int, int], ...]
) -> dict[tuple[Any, ...], list[RunResult]]:
    loaded, _ = scan_results(results_dir, pattern=TRIAL_FILES)  # files: the cache key, stat by stat
    return grid_searches(result for _, result in loaded)


def _current_identity(
    root: DictConfig,
    key: str,
    searched: Sequence[str],
    seed_paths: list[tuple[str, ...]],
    carried: dict[str, Any] | None = None,
) -> str:
    """The group identity of the config being composed, with ``key`` (the one being resolved) left out, so the
    identity can be resolved without resolving ``key`` itself. ``carried``: keys set to the search's values
    first (``sweep.transfer``), so what follows them by interpolation (``trainer.max_steps``) follows too."""
    container = OmegaConf.to_container(root, resolve=False)
    container.pop("hydra", None)
    _drop_path(container, key)
    for dotted, value in (carried or {}).items():
        _set_path(container, dotted, value)
    container["paths"] = {name: f"<paths.{name}>" for name in (container.get("paths") or {})}
    resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    return group_identity(resolved, searched, seed_paths)


def chosen_trial(root: DictConfig, key: str) -> tuple[RunResult, list[RunResult]]:
    """The search trial a report stage takes ``key`` from, with all the trials of its search.

    Matched on study, task, model, method, ``sweep.search_seed`` and the rest of the config: a report stage that
    changed another knob (a rank, the budget) finds no search and stops with one line, rather than borrowing a
    learning rate chosen for another configuration.
    """
    results_dir = Path(str(root.paths.results_dir))
    study, method = root.get("study"), str(root.method.name)
    task, model = str(root.task.name), str(root.model.name)
    seed = int(OmegaConf.select(root, "sweep.search_seed", default=0))
    candidates = {
        group: trials
        for group, trials in _searches_in(results_dir).items()
        if group[:5] == (study, task, model, method, seed) and key in group[5]
    }
    where = f"study {study}, {task}/{model}/{method}, search seed {seed}, in {results_dir}"
    if not candidates:
        raise ConfigError(
            f"optimizer.lr_factor=${{{CHOSEN_RESOLVER}:{key}}}: no search trials over {key} for {where}; "
            "run the search stage first"
        )
    # The trials ran at the search seed and this run at another: the keys that follow the seed are the ones
    # this config spells ${seed} (a value that merely equals the search seed, like a split seed of 0, is kept).
    seed_paths = seed_interpolations(root)
    transfer = list(OmegaConf.select(root, "sweep.transfer", default=None) or [])  # may differ, by intent
    matching = [
        trials
        for group, trials in candidates.items()
        if group_identity(trials[0].config, group[5], seed_paths)
        == _current_identity(
            root, key, group[5], seed_paths, {k: lookup(trials[0].config, k) for k in transfer}
        )
    ]
    if not matching:
        raise ConfigError(
            f"{key}=${{{CHOSEN_RESOLVER}:{key}}}: the search trials for {where} ran another configuration "
            "(a knob other than the searched ones differs); run the report stage with the search's settings"
        )
    trials = matching[0]
    missing, grid = unrun_points(trials, key)
    if missing:
        run = len(grid) - len(missing)
        shown = ", ".join(f"{key}={value}" for value in missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise ConfigError(
            f"{key}=${{{CHOSEN_RESOLVER}:{key}}}: the search for {where} has run {run} of its {len(grid)} grid "
            f"points (missing {shown}); every method gets its whole grid before a choice: finish the search stage"
        )
    best = best_trial(trials)
    if best is None:
        raise ConfigError(
            f"{key}=${{{CHOSEN_RESOLVER}:{key}}}: no trial of the search for {where} finished ok"
        )
    return best, trials


# A trial that ran to its end or stopped on a non-finite loss has run its grid point (the leaderboard's FINISHED);
# a failed or killed one has not (a re-run may finish it).
RUN_STATUSES = ("ok", "diverged")


def unrun_points(trials: Sequence[RunResult], key: str) -> tuple[list[str], list[str]]:
    """(the grid values of ``key`` no trial has run, the whole grid), from the grid the trials recorded
    (``search.space``, a study's sweeper params). A grid given on the command line is not on record: nothing
    can be missing from it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    spaces = {str(((t.search or {}).get("space") or {}).get(key)) for t in trials} - {"None"}
    if len(spaces) != 1:
        return [], []
    (override,) = OverridesParser.create().parse_overrides([f"{key}={spaces.pop()}"])
    grid = list(override.sweep_string_iterator()) if override.is_sweep_override() else []
    ran = [lookup(t.config or {}, key) for t in trials if t.status in RUN_STATUSES]
    return [value for value in grid if not any(_same_value(value, v) for v in ran)], grid


def _same_value(text: str, value: Any) -> bool:
    """A grid value as Hydra spells it (``1.0``) against a trial's recorded one (``1.0`` or ``1``)."""
    try:
        return math.isclose(float(text), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return text == str(value)


def chosen(key: str, *, _root_: DictConfig) -> Any:
    """``${peftbench.chosen:optimizer.lr_factor}``: the value the search chose for ``key`` (best validation)."""
    best, _ = chosen_trial(_root_, key)
    return lookup(best.config, key)


def resolve_choices(cfg: DictConfig) -> None:
    """Resolve every ``${peftbench.chosen:...}`` once, before anything else reads the config: a missing or
    mismatched search is a config error (one line, exit 2), not a run that failed while resolving."""
    from omegaconf.errors import InterpolationResolutionError

    for key in chosen_keys(cfg):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except InterpolationResolutionError as error:
            cause: BaseException | None = error  # OmegaConf wraps the resolver's error twice, as context
            for _ in range(10):
                cause = cause.__cause__ or cause.__context__ if cause is not None else None
                if isinstance(cause, ConfigError):
                    raise cause from None
            raise


def chosen_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys whose value is a ``${peftbench.chosen:...}`` interpolation."""
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, (*path, str(name)))
        elif isinstance(node, str) and node.replace(" ", "").startswith("${" + CHOSEN_RESOLVER + ":"):
            found.append(".".join(path))

    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    walk(container, ())
    return found


def report_record(cfg: DictConfig) -> dict[str, Any] | None:
    """For a run whose config takes values from a search: what was chosen, from how many trials, by which rule
    (the result's ``search`` field; its variant is then ``tuned``). None for any other run."""
    keys = chosen_keys(cfg)
    if not keys:
        return None
    record: dict[str, Any] = {"sweeper": "grid", "rule": "best validation score", "chosen": {}}
    for key in keys:
        best, trials = chosen_trial(cfg, key)
        record["chosen"][key] = lookup(best.config, key)
        record.update(
            chosen_run_id=best.run_id,
            search_seed=best.seed,
            trials_run=len(trials),
            trials_ok=sum(t.status == "ok" for t in trials),
            space=(best.search or {}).get("space"),
        )
    transfer = list(OmegaConf.select(cfg, "sweep.transfer", default=None) or [])
    if transfer:  # the choice was carried to another setting of these keys: say so, and from what
        record["transfer"] = {k: lookup(best.config, k) for k in transfer}
    return record
