"""Comparison tables from result files (the seed of the sweeps' leaderboard).

``peftbench-leaderboard DIR`` prints one row per (task, model, method, variant) with the headline
test metric averaged over seeds (mean ± std, n). Unreadable files and failed runs are reported,
never silently averaged in.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from peftbench.results import RunResult, load_results

COLUMNS = (
    "task",
    "model",
    "method",
    "variant",
    "trainable %",
    "score",
    "n",
    "samples/s",
    "peak MiB",
    "time s",
)


def headline(result: RunResult) -> tuple[str, float | None]:
    name = result.config.get("task", {}).get("headline", "accuracy")
    return name, result.test.get(f"test/{name}")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(value: float | None, digits: int = 1) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"
    )


def comparison_rows(results: Iterable[RunResult]) -> list[dict[str, str]]:
    """Aggregate ok runs over seeds; sorted by task, model, then score (best first)."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in results:
        if result.status == "ok":
            groups[(result.task, result.model, result.method, result.variant)].append(result)
    rows = []
    for (task, model, method, variant), runs in groups.items():
        metric, _ = headline(runs[0])
        scores = [s for s in (headline(r)[1] for r in runs) if s is not None]

        def eff(key: str, runs: list[RunResult] = runs) -> float | None:
            values = [r.efficiency[key] for r in runs if r.efficiency.get(key) is not None]
            return statistics.fmean(values) if values else None

        mean, std = _mean_std(scores) if scores else (None, None)
        score = "–" if mean is None else (f"{mean:.4f} ± {std:.4f}" if len(scores) > 1 else f"{mean:.4f}")
        rows.append(
            {
                "task": task,
                "model": model,
                "method": method,
                "variant": variant,
                "trainable %": _fmt(eff("trainable_ratio_pct"), 3),
                "score": f"{metric} {score}",
                "n": str(len(scores)),
                "samples/s": _fmt(eff("train_samples_per_s")),
                "peak MiB": _fmt(eff("peak_mem_mb"), 0),
                "time s": _fmt(eff("train_time_s")),
                "_sort": (task, model, -(mean if mean is not None else -math.inf)),
            }
        )
    rows.sort(key=lambda row: row.pop("_sort"))
    return rows


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    if not rows:
        return "(no successful runs)"
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    line = lambda cells: "| " + " | ".join(cells[c].ljust(widths[c]) for c in COLUMNS) + " |"  # noqa: E731
    header = line({c: c for c in COLUMNS})
    rule = "|" + "|".join("-" * (widths[c] + 2) for c in COLUMNS) + "|"
    return "\n".join([header, rule, *(line(r) for r in rows)])


def failed_lines(results: Iterable[RunResult]) -> list[str]:
    return [
        f"{r.status}: {r.task}/{r.model}/{r.method} seed {r.seed} ({r.run_id}): {r.error}"
        for r in results
        if r.status != "ok"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftbench-leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="folder of result JSON files (searched recursively)")
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--model", help="only this model")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a folder")
    results, skipped = load_results(args.results_dir)
    results = [
        r
        for r in results
        if (not args.task or r.task == args.task) and (not args.model or r.model == args.model)
    ]
    print(format_table(comparison_rows(results)))
    for line in failed_lines(results):
        print(line)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
