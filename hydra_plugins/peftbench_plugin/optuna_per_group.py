"""Optuna search with the same trial budget for every method: one study per command-line choice.

hydra-optuna-sweeper turns ``method=lora,ia3`` into one categorical search dimension, so the
sampler would share one trial budget among methods and favour whichever looks good early. A fair
comparison searches each method (and seed) on its own with the same number of trials; this
subclass runs one fresh Optuna study per combination of the comma lists given on the command
line and leaves the searched hyperparameters (``hydra.sweeper.params``) to Optuna. Optional:
without hydra-optuna-sweeper installed this module registers nothing.
"""

from __future__ import annotations

import copy
import itertools
import logging
import shutil
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the optional extra is not installed
    OptunaSweeper = None

OUTER = (
    ValueType.SIMPLE_CHOICE_SWEEP,
    ValueType.CHOICE_SWEEP,
    ValueType.GLOB_CHOICE_SWEEP,
    ValueType.RANGE_SWEEP,
)


def split_arguments(arguments: list[str]) -> tuple[list[str], list[list[str]]]:
    """(overrides passed to every study, one list of `key=value` per outer comma list)."""
    inner, outer = [], []
    for text, override in zip(arguments, OverridesParser.create().parse_overrides(arguments), strict=True):
        if override.value_type in OUTER and not override.is_hydra_override():
            key = override.get_key_element()
            outer.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            inner.append(text)
    return inner, outer


if OptunaSweeper is not None:

    class PerGroupOptunaSweeper(OptunaSweeper):
        def sweep(self, arguments: list[str]) -> None:
            impl = self.sweeper
            inner, outer = split_arguments(list(arguments))
            sampler, n_trials = impl.sampler, impl.n_trials
            sweep_dir = Path(str(impl.config.hydra.sweep.dir))
            for combination in itertools.product(*outer):
                label = " ".join(combination) or "(all)"
                log.info(f"Optuna study for {label}: {n_trials} trials")
                impl.sampler, impl.n_trials = copy.deepcopy(sampler), n_trials  # same start for every study
                try:
                    impl.sweep([*inner, *combination])
                except ValueError as error:  # e.g. every trial failed: no best trial; the next study goes on
                    log.error(f"Optuna study for {label} ended without a best trial: {error}")
                    continue
                summary = sweep_dir / "optimization_results.yaml"
                if summary.is_file():
                    tag = "_".join(c.replace("=", "-").replace("/", "-") for c in combination) or "all"
                    shutil.copy(summary, sweep_dir / f"optimization_results_{tag}.yaml")
