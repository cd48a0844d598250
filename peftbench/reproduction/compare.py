"""Reported vs measured: one row per paper figure, one line per claim, each with a verdict.

The measured figure is aggregated the way the paper aggregates (LoRA reports the median of 5 seeds),
shown beside mean ± std and n, so a reader sees both the paper's number and the spread behind ours.
Verdicts: ``reproduced`` (within tolerance), ``below`` / ``above`` (outside it), ``not run`` (a
reference row, or no finished result yet); claims ``holds`` / ``fails`` / ``not run``. A row whose
runs selected checkpoints on the reported split (a paper's own rule) is flagged, and so is a row
measured on fewer seeds than the paper used or on a stand-in model (dry run).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peftbench.reproduction.reported import Claim, Reported, ReportedRow
from peftbench.results import RunResult

AGGREGATORS = {
    "median": statistics.median,
    "mean": statistics.fmean,
    "max": max,
    "single": lambda values: values[0],
}


@dataclass
class Measured:
    values: list[float]  # per seed, in reported units (x scale), seed order
    seeds: list[int]
    models: list[str]
    rules: list[str]  # selection rule of each run
    aggregation: str

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def aggregate(self) -> float | None:
        return AGGREGATORS[self.aggregation](self.values) if self.values else None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else (0.0 if self.n else None)


@dataclass
class RowVerdict:
    label: str
    source: str | None
    task: str
    model: str | None
    method: str
    metric: str
    reported: float | None
    spread: float | None
    tolerance: float
    measured: float | None
    mean: float | None
    std: float | None
    n: int
    difference: float | None
    verdict: str
    flags: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class ClaimVerdict:
    claim: str
    task: str
    metric: str
    left_value: float | None
    right_value: float | None
    verdict: str
    n: dict[str, int] = field(default_factory=dict)
    note: str | None = None


@dataclass
class ArmSummary:
    """What one arm measured on one task: the operands behind the rows and claims."""

    task: str
    method: str
    metric: str
    aggregate: float | None
    mean: float | None
    std: float | None
    n: int
    seeds: list[int]
    trainable_pct: float | None
    samples_per_s: float | None
    train_time_s: float | None


@dataclass
class Comparison:
    paper: str
    experiment: str
    aggregation: str
    seeds: int | None
    scale: float
    conventions: list[str]
    rows: list[RowVerdict]
    claims: list[ClaimVerdict]
    dry_run: bool = False
    arms: list[ArmSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _measure(
    results: list[RunResult],
    task: str,
    method: str,
    metric: str,
    model: str | None,
    scale: float,
    aggregation: str,
) -> Measured:
    chosen: dict[int, RunResult] = {}
    for result in results:
        if result.status != "ok" or result.variant == "trial":
            continue
        if result.task != task or result.method != method or (model is not None and result.model != model):
            continue
        if f"test/{metric}" not in result.test:
            continue
        # One result per seed: a tuned pick stands for its trials; otherwise the newest.
        previous = chosen.get(result.seed)
        if previous is None or (result.ended_at or "") > (previous.ended_at or ""):
            chosen[result.seed] = result
    ordered = [chosen[seed] for seed in sorted(chosen)]
    values = [float(r.test[f"test/{metric}"]) * scale for r in ordered]
    finite = [(v, r) for v, r in zip(values, ordered, strict=True) if not math.isnan(v)]
    return Measured(
        values=[v for v, _ in finite],
        seeds=[r.seed for _, r in finite],
        models=sorted({r.model for _, r in finite}),
        rules=sorted({str(r.selection.get("rule", "best_validation")) for _, r in finite}),
        aggregation=aggregation,
    )


def _flags(measured: Measured, reported: Reported, dry_run: bool) -> list[str]:
    flags = []
    if "reported_split" in measured.rules:
        flags.append("selected on the reported split (paper's rule)")
    if reported.seeds and 0 < measured.n < reported.seeds:
        flags.append(f"{measured.n} of {reported.seeds} seeds")
    if dry_run:
        flags.append(f"dry run on stand-in {'/'.join(measured.models) or 'models'}: not a measurement")
    return flags


def _row_verdict(row: ReportedRow, reported: Reported, results: list[RunResult], dry_run: bool) -> RowVerdict:
    model = None if dry_run else reported.model_of(row)
    tolerance = row.tolerance if row.tolerance is not None else reported.tolerance
    measured = _measure(
        results, row.task, row.method, row.metric, model, reported.scale, reported.aggregation
    )
    value = measured.aggregate if row.run else None
    difference = None if value is None or row.reported is None else value - row.reported
    if not row.run:
        verdict = "not run (reference)"
    elif value is None:
        verdict = "not run (no result)"
    elif row.reported is None:
        verdict = "measured (no reported figure)"
    elif abs(difference) <= tolerance:
        verdict = "reproduced"
    else:
        verdict = "below" if difference < 0 else "above"
    return RowVerdict(
        label=row.label or row.method,
        source=row.source,
        task=row.task,
        model=reported.model_of(row),
        method=row.method,
        metric=row.metric,
        reported=row.reported,
        spread=row.spread,
        tolerance=tolerance,
        measured=value,
        mean=measured.mean if row.run else None,
        std=measured.std if row.run else None,
        n=measured.n if row.run else 0,
        difference=difference,
        verdict=verdict,
        flags=_flags(measured, reported, dry_run) if row.run and measured.n else [],
        note=row.note,
    )


_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def _claim_verdict(claim: Claim, reported: Reported, results: list[RunResult], dry_run: bool) -> ClaimVerdict:
    model = None if dry_run else reported.model_of(claim)
    values: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for name in claim.methods:
        measured = _measure(
            results, claim.task, name, claim.metric, model, reported.scale, reported.aggregation
        )
        values[name], counts[name] = measured.aggregate, measured.n

    def value_of(token: str | None) -> float | None:
        if token is None:
            return 0.0
        return values.get(token) if token in values else float(token)

    left, minus, right = value_of(claim.left), value_of(claim.minus), value_of(claim.right)
    if None in (left, minus, right):
        verdict, left_value = "not run", None
    else:
        left_value = left - minus if claim.minus else left
        if claim.absolute:
            left_value = abs(left_value)
        verdict = "holds" if _OPS[claim.operator](left_value, right) else "fails"
    return ClaimVerdict(
        claim=claim.text,
        task=claim.task,
        metric=claim.metric,
        left_value=left_value,
        right_value=right,
        verdict=verdict,
        n=counts,
        note=claim.note,
    )


def _mean_of(results: list[RunResult], key: str) -> float | None:
    values = [r.efficiency.get(key) for r in results]
    values = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.fmean(values) if values else None


def _arm_summaries(reported: Reported, results: list[RunResult], dry_run: bool) -> list[ArmSummary]:
    wanted: dict[tuple[str, str], str] = {}
    for row in reported.rows:
        if row.run:
            wanted.setdefault((row.task, row.method), row.metric)
    for claim in reported.claims:
        for name in claim.methods:
            wanted.setdefault((claim.task, name), claim.metric)
    summaries = []
    for (task, method), metric in sorted(wanted.items()):
        model = None if dry_run else reported.model
        measured = _measure(results, task, method, metric, model, reported.scale, reported.aggregation)
        runs = [
            r
            for r in results
            if r.status == "ok" and r.task == task and r.method == method and r.seed in measured.seeds
        ]
        summaries.append(
            ArmSummary(
                task=task,
                method=method,
                metric=metric,
                aggregate=measured.aggregate,
                mean=measured.mean,
                std=measured.std,
                n=measured.n,
                seeds=measured.seeds,
                trainable_pct=_mean_of(runs, "trainable_ratio_pct"),
                samples_per_s=_mean_of(runs, "train_samples_per_s"),
                train_time_s=_mean_of(runs, "train_time_s"),
            )
        )
    return summaries


def compare(
    reported: Reported, results: list[RunResult], experiment: str, dry_run: bool = False
) -> Comparison:
    return Comparison(
        paper=reported.paper,
        experiment=experiment,
        aggregation=reported.aggregation,
        seeds=reported.seeds,
        scale=reported.scale,
        conventions=reported.conventions,
        rows=[_row_verdict(row, reported, results, dry_run) for row in reported.rows],
        claims=[_claim_verdict(claim, reported, results, dry_run) for claim in reported.claims],
        dry_run=dry_run,
        arms=_arm_summaries(reported, results, dry_run),
    )


# --- rendering ------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}"


ROW_COLUMNS = (
    "source",
    "row",
    "task",
    "metric",
    "reported",
    "measured",
    "mean ± std",
    "n",
    "diff",
    "tol",
    "verdict",
)


def row_cells(row: RowVerdict) -> list[str]:
    reported = _num(row.reported) + (f" ± {_num(row.spread)}" if row.spread is not None else "")
    return [
        row.source or "–",
        row.label,
        row.task,
        row.metric,
        reported,
        _num(row.measured),
        _pm(row.mean, row.std),
        str(row.n),
        "–" if row.difference is None else f"{row.difference:+.1f}",
        _num(row.tolerance),
        row.verdict + "".join(f" [{flag}]" for flag in row.flags),
    ]


def to_markdown(comparison: Comparison) -> str:
    lines = [f"# Reproduction: {comparison.experiment}", "", f"**Paper / study:** {comparison.paper}", ""]
    if comparison.dry_run:
        lines += [
            "> **Dry run** on stand-in models and fixtures: it checks the path, its numbers mean nothing.",
            "",
        ]
    aggregation = comparison.aggregation + (f" of {comparison.seeds} seeds" if comparison.seeds else "")
    if comparison.rows:
        lines += [
            f"Measured = the paper's aggregation ({aggregation}) of our runs, in the paper's units "
            f"(x{comparison.scale:g}); mean ± std (sample std) and n beside it. Verdict: |measured - reported| "
            "<= tol is *reproduced*, else *below* / *above*.",
            "",
        ]
    if comparison.claims:
        lines += [
            f"Claims compare the {aggregation} of each arm's runs (x{comparison.scale:g}); written down before "
            "running, each holds or fails.",
            "",
        ]
    if comparison.conventions:
        lines += ["**Conventions**", "", *(f"- {c}" for c in comparison.conventions), ""]
    if comparison.rows:
        lines += ["| " + " | ".join(ROW_COLUMNS) + " |", "|" + "---|" * len(ROW_COLUMNS)]
        lines += ["| " + " | ".join(row_cells(row)) + " |" for row in comparison.rows]
        lines.append("")
        notes = [f"- {row.label} / {row.task}: {row.note}" for row in comparison.rows if row.note]
        if notes:
            lines += ["**Row notes**", "", *notes, ""]
    if comparison.claims:
        lines += [
            "| claim | task | metric | left side | right side | n | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for claim in comparison.claims:
            counts = ", ".join(f"{k}={v}" for k, v in claim.n.items())
            lines.append(
                f"| `{claim.claim}` | {claim.task} | {claim.metric} | {_num(claim.left_value, 2)} | "
                f"{_num(claim.right_value, 2)} | {counts} | {claim.verdict} |"
            )
        lines.append("")
        notes = [f"- `{c.claim}`: {c.note}" for c in comparison.claims if c.note]
        if notes:
            lines += ["**Claim notes**", "", *notes, ""]
    measured_arms = [arm for arm in comparison.arms if arm.n]
    if measured_arms:
        aggregation = comparison.aggregation
        lines += [
            f"**Measured** ({aggregation} and mean ± std over seeds, x{comparison.scale:g}; efficiency: means)",
            "",
            f"| task | method | metric | {aggregation} | mean ± std | n | seeds | trainable % | samples/s | train s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for arm in measured_arms:
            lines.append(
                f"| {arm.task} | {arm.method} | {arm.metric} | {_num(arm.aggregate, 2)} | {_pm(arm.mean, arm.std)} | "
                f"{arm.n} | {' '.join(map(str, arm.seeds))} | {_num(arm.trainable_pct, 3)} | "
                f"{_num(arm.samples_per_s)} | {_num(arm.train_time_s, 0)} |"
            )
        lines.append("")
    tally: dict[str, int] = defaultdict(int)
    for row in comparison.rows:
        tally[row.verdict] += 1
    for claim in comparison.claims:
        tally[f"claim {claim.verdict}"] += 1
    lines.append(
        "**Summary:** " + ", ".join(f"{count} {verdict}" for verdict, count in sorted(tally.items()))
    )
    return "\n".join(lines) + "\n"


def to_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["kind", "source", "label", "task", "model", "method", "metric", "reported", "spread", "tolerance",
         "measured", "mean", "std", "n", "difference", "verdict", "flags"]
    )  # fmt: skip
    for r in comparison.rows:
        writer.writerow(
            ["row", r.source, r.label, r.task, r.model, r.method, r.metric, r.reported, r.spread, r.tolerance,
             r.measured, r.mean, r.std, r.n, r.difference, r.verdict, "; ".join(r.flags)]
        )  # fmt: skip
    for c in comparison.claims:
        writer.writerow(
            ["claim", None, c.claim, c.task, None, None, c.metric, c.right_value, None, None, c.left_value,
             None, None, sum(c.n.values()), None, c.verdict, None]
        )  # fmt: skip
    return buffer.getvalue()


def write_outputs(comparison: Comparison, out: str | Path) -> list[Path]:
    """compare.md, compare.csv and compare.json in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.md", out / "compare.csv", out / "compare.json"]
    paths[0].write_text(to_markdown(comparison))
    paths[1].write_text(to_csv(comparison))
    paths[2].write_text(json.dumps(comparison.to_dict(), indent=2, allow_nan=False, default=str) + "\n")
    return paths
