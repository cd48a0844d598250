"""Leaderboards from result files: Markdown, CSV and LaTeX tables, plots and a one-page report.

``peftbench-leaderboard DIR`` prints one row per (task, model, budget, method, variant) with the
headline test metric over seeds (mean ± std, n). Rows of different tasks, models or budgets are
never averaged together: each (task, model, budget) is its own table. Unreadable files and runs
that did not finish ok are listed apart, never silently averaged in. Search trials are left out
(their ``tuned`` pick stands for them) unless ``--trials``. ``--out DIR`` writes the tables,
the Pareto plots and ``report.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.results import RunResult, load_results

# Columns of the printed/Markdown table (the CSV carries the raw numbers behind them).
COLUMNS = (
    "task",
    "model",
    "budget",
    "method",
    "variant",
    "trainable",
    "trainable %",
    "score",
    "n",
    "samples/s",
    "peak MiB",
    "time s",
)


def headline(result: RunResult) -> tuple[str, float | None]:
    name = result.config.get("task", {}).get("headline", "accuracy")
    value = result.test.get(f"test/{name}")
    return name, None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def budget_of(result: RunResult) -> dict[str, Any]:
    """The planned budget (steps x effective batch): what runs must share to be compared."""
    config = result.config or {}
    steps = result.budget.get("max_steps") or config.get("trainer", {}).get("max_steps")
    steps = steps or config.get("task", {}).get("max_steps")
    batch = result.budget.get("batch_size") or config.get("task", {}).get("batch_size")
    accumulate = config.get("trainer", {}).get("accumulate_grad_batches") or 1
    world = result.budget.get("world_size") or 1
    effective = batch * accumulate * world if batch else None
    return {"steps": steps, "batch": effective, "label": f"{steps} steps x {effective}"}


@dataclass
class Row:
    """One leaderboard row: the ok runs of one method and variant at one task, model and budget."""

    task: str
    model: str
    budget: str
    method: str
    variant: str
    metric: str
    runs: list[RunResult] = field(default_factory=list)

    def _values(self, key: str, source: str = "efficiency") -> list[float]:
        values = [getattr(r, source).get(key) for r in self.runs]
        return [float(v) for v in values if isinstance(v, int | float) and not math.isnan(v)]

    def mean_of(self, key: str, source: str = "efficiency") -> float | None:
        values = self._values(key, source)
        return statistics.fmean(values) if values else None

    @property
    def scores(self) -> list[float]:
        return [s for s in (headline(r)[1] for r in self.runs) if s is not None]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.scores) if self.n > 1 else (0.0 if self.n else None)

    @property
    def median(self) -> float | None:
        return statistics.median(self.scores) if self.scores else None

    def numbers(self) -> dict[str, Any]:
        """The raw figures (CSV, plots)."""
        return {
            "task": self.task,
            "model": self.model,
            "budget": self.budget,
            "method": self.method,
            "variant": self.variant,
            "metric": self.metric,
            "mean": self.mean,
            "std": self.std,
            "median": self.median,
            "n": self.n,
            "trainable_params": self.mean_of("trainable_params"),
            "trainable_pct": self.mean_of("trainable_ratio_pct"),
            "peak_mem_mb": self.mean_of("peak_mem_mb"),
            "samples_per_s": self.mean_of("train_samples_per_s"),
            "train_time_s": self.mean_of("train_time_s"),
            "train_flops_est": self.mean_of("train_flops_est", "budget"),
            "tokens": self.mean_of("tokens", "budget"),
            "seeds": " ".join(str(r.seed) for r in sorted(self.runs, key=lambda r: r.seed)),
        }


def aggregate(results: Iterable[RunResult], include_trials: bool = False) -> list[Row]:
    """Group ok runs over seeds; sorted by task, model, budget, then score (best first)."""
    groups: dict[tuple, Row] = {}
    for result in results:
        if result.status != "ok" or (result.variant == "trial" and not include_trials):
            continue
        budget = budget_of(result)["label"]
        key = (result.task, result.model, budget, result.method, result.variant)
        if key not in groups:
            groups[key] = Row(*key, metric=headline(result)[0])
        groups[key].runs.append(result)
    rows = list(groups.values())
    rows.sort(key=lambda r: (r.task, r.model, r.budget, -(r.mean if r.mean is not None else -math.inf)))
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _count(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def score_text(row: Row, median: bool = False, plus_minus: str = "±") -> str:
    if row.mean is None:
        return "–"
    text = f"{row.mean:.4f} {plus_minus} {row.std:.4f}" if row.n > 1 else f"{row.mean:.4f}"
    return text + (f" (median {row.median:.4f})" if median and row.n > 1 else "")


def variant_text(row: Row) -> str:
    """`tuned (8 trials)`: a tuned row names the search budget it used."""
    trials = {(r.search or {}).get("n_trials") for r in row.runs} - {None}
    return f"{row.variant} ({'/'.join(str(t) for t in sorted(trials))} trials)" if trials else row.variant


def display_rows(rows: Sequence[Row], median: bool = False) -> list[dict[str, str]]:
    """Rows as the strings every table format shows (so Markdown, CSV and LaTeX agree)."""
    out = []
    for row in rows:
        numbers = row.numbers()
        out.append(
            {
                "task": row.task,
                "model": row.model,
                "budget": row.budget,
                "method": row.method,
                "variant": variant_text(row),
                "trainable": _count(numbers["trainable_params"]),
                "trainable %": _fmt(numbers["trainable_pct"], 3),
                "score": f"{row.metric} {score_text(row, median)}",
                "n": str(row.n),
                "samples/s": _fmt(numbers["samples_per_s"]),
                "peak MiB": _fmt(numbers["peak_mem_mb"], 0),
                "time s": _fmt(numbers["train_time_s"]),
            }
        )
    return out


def comparison_rows(results: Iterable[RunResult], median: bool = False) -> list[dict[str, str]]:
    """Display rows of ok runs (the end-of-sweep table uses this)."""
    return display_rows(aggregate(results), median)


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    if not rows:
        return "(no successful runs)"
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    line = lambda cells: "| " + " | ".join(cells[c].ljust(widths[c]) for c in COLUMNS) + " |"  # noqa: E731
    header = line({c: c for c in COLUMNS})
    rule = "|" + "|".join("-" * (widths[c] + 2) for c in COLUMNS) + "|"
    return "\n".join([header, rule, *(line(r) for r in rows)])


CSV_FIELDS = (
    "task", "model", "budget", "method", "variant", "metric", "mean", "std", "median", "n",
    "trainable_params", "trainable_pct", "peak_mem_mb", "samples_per_s", "train_time_s",
    "train_flops_est", "tokens", "seeds",
)  # fmt: skip


def to_csv(rows: Sequence[Row]) -> str:
    """Raw numbers, one line per row (full precision; the Markdown/LaTeX round them)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.numbers().items()})
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def to_latex(rows: Sequence[Row], median: bool = False) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); one block per (task, model, budget)."""
    columns = [c for c in COLUMNS if c not in ("task", "model", "budget")]
    lines = [r"\begin{tabular}{ll" + "r" * (len(columns) - 2) + "}", r"\toprule"]
    lines.append(" & ".join(_latex_escape(c) for c in columns) + r" \\")
    section = None
    for row, cells in zip(rows, display_rows(rows, median), strict=True):
        if (row.task, row.model, row.budget) != section:
            section = (row.task, row.model, row.budget)
            lines.append(r"\midrule")
            title = f"{row.task} / {row.model} / {row.budget} ({row.metric})"
            lines.append(rf"\multicolumn{{{len(columns)}}}{{l}}{{\textit{{{_latex_escape(title)}}}}} \\")
        cells = dict(cells, score=score_text(row, median, plus_minus=r"$\pm$"))
        lines.append(
            " & ".join(cells[c] if c == "score" else _latex_escape(cells[c]) for c in columns) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def sections(rows: Sequence[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """Rows per (task, model, budget): the units that may be compared."""
    grouped: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.task, row.model, row.budget)].append(row)
    return dict(grouped)


def failed_lines(results: Iterable[RunResult]) -> list[str]:
    return [
        f"{r.status}: {r.task}/{r.model}/{r.method} seed {r.seed} ({r.run_id}): {r.error}"
        for r in results
        if r.status != "ok"
    ]


def markdown(rows: Sequence[Row], median: bool = False) -> str:
    """One Markdown table per (task, model, budget), headed by what it compares."""
    parts = []
    for (task, model, budget), members in sections(rows).items():
        parts.append(f"### {task} · {model} · {budget}\n\n{format_table(display_rows(members, median))}\n")
    return "\n".join(parts) if parts else "(no successful runs)\n"


def write_outputs(
    rows: Sequence[Row],
    results: Sequence[RunResult],
    skipped: Sequence[tuple[Path, str]],
    out_dir: Path,
    source: Path,
    median: bool = False,
    plots: bool = True,
) -> dict[str, Path]:
    """Tables (md, csv, tex), Pareto plots (png, svg) and report.md under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "markdown": out_dir / "leaderboard.md",
        "csv": out_dir / "leaderboard.csv",
        "latex": out_dir / "leaderboard.tex",
    }
    written["markdown"].write_text(markdown(rows, median))
    written["csv"].write_text(to_csv(rows))
    written["latex"].write_text(to_latex(rows, median))
    figures: dict[tuple[str, str, str], list[Path]] = {}
    if plots:
        from peftbench.plots import pareto_plots

        for key, members in sections(rows).items():
            figures[key] = pareto_plots(members, out_dir)
    report = [f"# peftbench leaderboard\n\nFrom `{source}`: {len(results)} result file(s).\n"]
    report.append(
        "Scores: headline test metric of the checkpoint chosen by validation, mean ± sample std over "
        "seeds (n). Throughput and memory: mean over the same runs. Budget: optimizer steps x effective "
        "batch; rows are only compared within one task, model and budget.\n"
    )
    for key, members in sections(rows).items():
        task, model, budget = key
        report.append(f"## {task} · {model} · {budget}\n\n{format_table(display_rows(members, median))}\n")
        for path in figures.get(key, []):
            if path.suffix == ".png":
                report.append(f"![{path.stem}]({path.name})\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftbench-leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="folder of result JSON files (searched recursively)")
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--budget", help="only this budget, as printed (e.g. '400 steps x 16')")
    parser.add_argument("--median", action="store_true", help="also show the median over seeds")
    parser.add_argument("--trials", action="store_true", help="also list search trials (variant trial)")
    parser.add_argument("--out", type=Path, help="write leaderboard.{md,csv,tex}, plots and report.md here")
    parser.add_argument("--no-plots", action="store_true", help="with --out: tables and report only")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a folder")
    results, skipped = load_results(args.results_dir)
    results = [
        r
        for r in results
        if (not args.task or r.task == args.task)
        and (not args.model or r.model == args.model)
        and (not args.budget or budget_of(r)["label"] == args.budget)
    ]
    rows = aggregate(results, include_trials=args.trials)
    print(markdown(rows, args.median))
    for line in failed_lines(results):
        print(line)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.out:
        written = write_outputs(
            rows, results, skipped, args.out, args.results_dir, args.median, plots=not args.no_plots
        )
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
