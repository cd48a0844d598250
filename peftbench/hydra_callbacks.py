"""Hydra callbacks: what happens around a whole multirun (not one job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ComparisonTable(Callback):
    """Print one comparison table of the runs this multirun wrote when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from peftbench.leaderboard import comparison_rows, failed_lines, format_table
        from peftbench.results import load_results

        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        results, _ = load_results(config.paths.results_dir)
        mine = [r for r in results if r.sweep_dir == sweep_dir]
        print(f"\nComparison of {len(mine)} run(s) in {config.paths.results_dir} (sweep {sweep_dir}):")
        print(format_table(comparison_rows(mine)))
        for line in failed_lines(mine):
            print(line)
