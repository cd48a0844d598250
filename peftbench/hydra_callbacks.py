"""Hydra callbacks: what happens around a whole multirun (not one job)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("peftbench")


def _sweep_results(config: DictConfig) -> list:
    from peftbench.results import load_results, locate, skip_lines

    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    results, skipped = load_results(config.paths.results_dir)
    for line in skip_lines(skipped):  # a corrupt file never silently disables the end-of-sweep steps
        log.warning("%s", line)
    return [r for r in results if r.sweep_dir and locate(r.sweep_dir).resolve() == sweep_dir]


class SelectTuned(Callback):
    """After a hyperparameter search, write each search's chosen trial (best validation score) as `tuned`.

    Runs at the end of the multirun, when every trial has its result; a sweep without trials is
    left untouched. Re-running it rewrites the same files (the choice is deterministic).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from peftbench.results import write_result
        from peftbench.sweeps import select_tuned

        for tuned in select_tuned(_sweep_results(config)):
            path = write_result(tuned, config.paths.results_dir)
            log.info(
                "tuned %s/%s seed %s: chose %s of %s trials -> %s",
                tuned.method,
                tuned.task,
                tuned.seed,
                tuned.run_id,
                tuned.search.get("trials_run"),
                path,
            )


class ComparisonTable(Callback):
    """Print one comparison table of the runs this multirun wrote when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from peftbench.leaderboard import comparison_rows, failed_lines, format_table

        mine = _sweep_results(config)
        print(
            f"\nComparison of {len(mine)} run(s) in {config.paths.results_dir} (sweep {config.hydra.sweep.dir}):"
        )
        print(format_table(comparison_rows(mine)))
        for line in failed_lines(mine):
            print(line)
