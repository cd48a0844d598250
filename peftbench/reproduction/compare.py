"""Reported vs measured: one row per paper figure, one line per claim, each with a three-valued verdict.

**Which runs.** An arm (task, method, model) is measured on one configuration: its runs are grouped by
``config_fingerprint`` and the configuration with the most seeds is used (ties: the newest), one run per seed
(the newest; a duplicate file of a run id counts once). Other configurations of the arm are named in a flag,
never pooled in: two learning rates at one seed are two configurations, not two seeds.

**Rows.** The measured figure is the paper's aggregation of our seeds (LoRA reports the median of 5), with a
95 % interval on it from ``peftbench.stats.interval`` (a bootstrap over seeds x test examples when every run
stored its predictions, else a t interval over seeds on the seed mean, which leaves test-set noise out and
says so). The verdict is an equivalence test against the band reported ± margin, margin = sqrt(tolerance² +
spread²) (the declared tolerance and the paper's ±): *reproduced* when the interval lies inside the band, *not
reproduced* when it lies entirely outside it, *inconclusive* otherwise. Fewer seeds than the paper, or one
seed, make it at most inconclusive. ``not run (reference)``, ``not run (no result)`` and ``measured (no
reported figure)`` as before.

**Claims** (``a - b >= x``, ``|a - b| <= x``, ``a >= x``, ``a >= b``) get a 95 % interval on their left side
-- ``stats.paired_difference`` on common seeds (and examples, when stored) for a difference,
``stats.interval`` for one arm -- and *hold* when the whole interval satisfies the claim, *fail* when none of
it does, and are *inconclusive* otherwise, under the same seed rule as rows.

A row whose runs selected checkpoints on the reported split (a paper's own rule) is flagged, and so is one
measured on fewer seeds than the paper or on a stand-in model (dry run).
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

from peftbench import stats
from peftbench.loggers import flat_config
from peftbench.reproduction.reported import Claim, Reported, ReportedRow
from peftbench.results import RunResult, config_fingerprint

CONFIDENCE = 0.95
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
HOLDS, FAILS = "holds", "fails"


@dataclass
class Measured:
    """One arm's runs on one configuration, one per seed, in seed order."""

    runs: list[RunResult]
    values: list[float]  # per seed, in reported units (x scale)
    metric: str
    aggregation: str
    fingerprint: str | None = None
    others: dict[str, int] = field(default_factory=dict)  # fingerprint -> seeds, of configurations left out
    duplicates: int = 0  # files of a run id already counted (or older runs of a seed it replaced)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs})

    @property
    def rules(self) -> list[str]:
        return sorted({str(r.selection.get("rule", "best_validation")) for r in self.runs})

    @property
    def mean(self) -> float | None:
        return stats.summarize(self.values).mean

    @property
    def std(self) -> float | None:
        return stats.summarize(self.values).std

    def scores(self, seeds: set[int] | None = None) -> list[stats.Scores]:
        """The runs' scores for the stats functions (optionally only some seeds)."""
        found = [stats.scores_of(r, self.metric) for r in self.runs if seeds is None or r.seed in seeds]
        return [s for s in found if s is not None]


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
    tolerance: float  # declared before running (reported.yaml)
    margin: float  # sqrt(tolerance² + spread²): the half-width of the equivalence band
    measured: float | None  # the paper's aggregation of our seeds, reported units
    low: float | None  # 95 % interval on `measured`, reported units (None: no interval)
    high: float | None
    interval_method: str | None
    mean: float | None
    std: float | None
    n: int
    seeds: list[int]
    fingerprint: str | None
    difference: float | None  # measured - reported
    verdict: str
    flags: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class ClaimVerdict:
    claim: str
    task: str
    metric: str
    left_value: (
        float | None
    )  # estimate of the left side (a - b signed, even for |a - b|; or a), reported units
    right_value: float | None  # the threshold x (0 for `a OP b`)
    low: float | None  # 95 % interval on the left side (a - b signed), reported units
    high: float | None
    interval_method: str | None
    verdict: str
    n: dict[str, int] = field(default_factory=dict)  # seeds per arm behind the interval
    seeds: list[int] = field(default_factory=list)  # the seeds the interval used (common seeds of a pair)
    flags: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class ArmSummary:
    """What one arm measured on one task: the operands behind the rows and claims."""

    task: str
    method: str
    metric: str
    aggregate: float | None
    low: float | None
    high: float | None
    interval_method: str | None
    mean: float | None
    std: float | None
    n: int
    seeds: list[int]
    fingerprint: str | None
    trainable_pct: float | None
    samples_per_s: float | None
    train_time_s: float | None
    flags: list[str] = field(default_factory=list)


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
    confidence: float = CONFIDENCE
    # Files in the results folder that could not be read as results ("path: reason"): counted, never guessed at.
    skipped: list[str] = field(default_factory=list)
    # Another study whose runs were judged (--study), and where their configuration differs from the one this
    # reproduction composes for the same arm (``recipe_differences``): the conventions describe its own runs.
    measured_study: str | None = None
    differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- which runs -------------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _measure(
    results: list[RunResult],
    task: str,
    method: str,
    metric: str,
    model: str | None,
    scale: float,
    aggregation: str,
    prefer: str | None = None,
) -> Measured:
    """The arm's runs on one configuration: the fingerprint with the most seeds (ties: the newest run). With
    ``prefer`` (a variant, e.g. ``tuned``), a configuration whose runs all carry that label comes first: a
    method's searched choice stands for it, and an arm without one (a baseline nobody searched) keeps its own."""
    by_config: dict[str, dict[int, RunResult]] = defaultdict(dict)
    duplicates: dict[str, int] = defaultdict(int)
    for result in results:
        if result.status != "ok" or result.variant == "trial":  # a tuned pick stands for its trials
            continue
        if result.task != task or result.method != method or (model is not None and result.model != model):
            continue
        if not _finite(result.test.get(f"test/{metric}")):
            continue
        fingerprint = config_fingerprint(result)
        seeds = by_config[fingerprint]
        previous = seeds.get(result.seed)
        if previous is not None:
            duplicates[fingerprint] += 1  # the same run id twice, or a re-run of that seed: one counts
            if (previous.ended_at or "") >= (result.ended_at or ""):
                continue
        seeds[result.seed] = result
    if not by_config:
        return Measured(runs=[], values=[], metric=metric, aggregation=aggregation)

    def rank(item: tuple[str, dict[int, RunResult]]) -> tuple[bool, int, str]:
        preferred = prefer is not None and all(r.variant == prefer for r in item[1].values())
        return preferred, len(item[1]), max((r.ended_at or "") for r in item[1].values())

    fingerprint, chosen = max(by_config.items(), key=rank)
    runs = [chosen[seed] for seed in sorted(chosen)]
    return Measured(
        runs=runs,
        values=[float(r.test[f"test/{metric}"]) * scale for r in runs],
        metric=metric,
        aggregation=aggregation,
        fingerprint=fingerprint,
        others={fp: len(seeds) for fp, seeds in sorted(by_config.items()) if fp != fingerprint},
        duplicates=duplicates[fingerprint],
    )


def _selection_flags(measured: Measured) -> list[str]:
    flags = []
    variants = sorted({r.variant for r in measured.runs})
    if variants and variants != ["default"]:
        chosen = sorted(
            {json.dumps((r.search or {}).get("chosen"), sort_keys=True) for r in measured.runs} - {"null"}
        )
        choice = f" (its search chose {', '.join(chosen)})" if chosen else ""
        flags.append(f"variant {'/'.join(variants)}{choice}")
    if measured.others:
        listed = ", ".join(f"{fp}: {k} seed{'s' if k != 1 else ''}" for fp, k in measured.others.items())
        flags.append(
            f"{len(measured.others)} other configuration{'s' if len(measured.others) != 1 else ''} "
            f"of this arm ignored ({listed})"
        )
    if measured.duplicates:
        plural = "s" if measured.duplicates != 1 else ""
        flags.append(f"{measured.duplicates} duplicate run{plural} of a seed counted once")
    return flags


def _flags(measured: Measured, reported: Reported, dry_run: bool) -> list[str]:
    flags = []
    if "reported_split" in measured.rules:
        flags.append("selected on the reported split (paper's rule)")
    if reported.seeds and 0 < measured.n < reported.seeds:
        flags.append(f"{measured.n} of {reported.seeds} seeds")
    if dry_run:
        flags.append(f"dry run on stand-in {'/'.join(measured.models) or 'models'}: not a measurement")
    return flags + _selection_flags(measured)


# --- verdict rules (pure: numbers in, verdict out) ----------------------------------------------------------
def margin_of(tolerance: float, spread: float | None) -> float:
    """Half-width of the equivalence band around a reported figure.

    The declared tolerance (how far a result may sit from the paper's and still be the same result, fixed
    before running) and the paper's own ± (how far its figure may sit from what its recipe really gives) are
    separate allowances; they add in quadrature, so the band is never narrower than the tolerance and a large
    ± widens it without doubling it.
    """
    return math.hypot(tolerance, spread or 0.0)


def equivalence_verdict(low: float | None, high: float | None, reported: float, margin: float) -> str:
    """TOST-style: reproduced when [low, high] lies inside [reported - margin, reported + margin], not
    reproduced when it lies entirely outside, inconclusive when it straddles an edge (or has no interval)."""
    if low is None or high is None:
        return INCONCLUSIVE
    band_low, band_high = reported - margin, reported + margin
    if band_low <= low and high <= band_high:
        return REPRODUCED
    if high < band_low or low > band_high:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def claim_interval_verdict(
    low: float | None, high: float | None, operator: str, threshold: float, absolute: bool = False
) -> str:
    """holds when every value in [low, high] satisfies ``value OP threshold`` (``|value| OP threshold`` when
    absolute), fails when none does, inconclusive otherwise (or with no interval)."""
    if low is None or high is None:
        return INCONCLUSIVE
    x = threshold
    if not absolute:
        if operator == ">=":
            holds, fails = low >= x, high < x
        elif operator == ">":
            holds, fails = low > x, high <= x
        elif operator == "<=":
            holds, fails = high <= x, low > x
        else:  # "<"
            holds, fails = high < x, low >= x
    elif operator in ("<=", "<"):  # |v| within x: the interval inside [-x, x]; fails when it misses it
        if operator == "<=":
            holds, fails = -x <= low and high <= x, high < -x or low > x
        else:
            holds, fails = -x < low and high < x, high <= -x or low >= x
    elif operator == ">=":  # |v| at least x: the interval wholly on one side, outside (-x, x)
        holds, fails = low >= x or high <= -x, -x < low and high < x
    else:  # ">"
        holds, fails = low > x or high < -x, -x <= low and high <= x
    return HOLDS if holds else FAILS if fails else INCONCLUSIVE


def seed_cap(n: int, paper_seeds: int | None) -> str | None:
    """Why a verdict can be at most inconclusive: one seed (no seed spread behind the interval), or fewer
    seeds than the paper aggregates (our aggregate is not the paper's statistic). None when neither holds."""
    if n < 2:
        return "1 seed"
    if paper_seeds and n < paper_seeds:
        return f"{n} of the paper's {paper_seeds} seeds"
    return None


def _capped(verdict: str, cap: str | None, flags: list[str]) -> str:
    if cap is None or verdict == INCONCLUSIVE:
        return verdict
    flags.append(f"at most inconclusive with {cap} (the interval alone: {verdict})")
    return INCONCLUSIVE


# --- intervals --------------------------------------------------------------------------------------------
def _crossed(scores: list[stats.Scores], metric: str) -> bool:
    """Every run stored predictions of one test set, for a metric stats can recompute from them: the crossed
    bootstrap over seeds x test examples applies."""
    if not scores or metric not in stats.METRICS or not all(s.has_predictions for s in scores):
        return False
    first = scores[0].label
    return all(
        len(s.label) == len(first) and bool((s.label == first).all())  # type: ignore[arg-type]
        for s in scores
    )


# Seed-only intervals (no per-example predictions) for a centre statistic are t intervals on the seed mean: a
# percentile bootstrap of a median over k seeds never reaches past the smallest and largest seed, and
# [min, max] covers the median only 1 - 2^(1-k) of the time (75 % for 3 seeds, 94 % for 5), short of 95 %.
_CENTRE = ("median", "mean")


def _arm_interval(scores: list[stats.Scores], metric: str, aggregation: str) -> stats.Interval:
    """95 % interval on one arm's aggregate: crossed bootstrap of the paper's statistic when predictions are
    stored, else (median, mean) the t interval over seeds, else whatever stats offers for max / single."""
    if _crossed(scores, metric) or aggregation not in _CENTRE:
        return stats.interval(scores, metric, aggregation, CONFIDENCE)
    found = stats.interval(scores, metric, "mean", CONFIDENCE)
    estimate = stats.aggregate([s.value for s in sorted(scores, key=lambda s: s.seed)], aggregation)
    method = (
        found.method
        if aggregation == "mean"
        else found.method.replace("t over seeds", "t over seeds on the seed mean", 1)
    )
    return stats.Interval(estimate, found.low, found.high, method)


def _difference_interval(
    a: list[stats.Scores], b: list[stats.Scores], metric: str, aggregation: str
) -> stats.Interval:
    """95 % interval on aggregate(a) - aggregate(b).

    With predictions: stats.paired_difference, paired by seed and example. Without, for a centre statistic:
    a paired t interval on the per-seed differences when both arms ran the same seeds (stats itself would
    give an unpaired Welch interval, or none for a median), Welch's otherwise; the estimate stays the paper's
    statistic.
    """
    if _crossed([*a, *b], metric) or aggregation not in _CENTRE:
        return stats.paired_difference(a, b, metric, aggregation, CONFIDENCE)[0]
    a, b = sorted(a, key=lambda s: s.seed), sorted(b, key=lambda s: s.seed)
    estimate = stats.aggregate([s.value for s in a], aggregation) - stats.aggregate(
        [s.value for s in b], aggregation
    )
    if [s.seed for s in a] != [s.seed for s in b]:
        found = stats.paired_difference(a, b, metric, "mean", CONFIDENCE)[0]
        return stats.Interval(estimate, found.low, found.high, found.method)
    differences = [stats.Scores(x.seed, x.value - y.value, None, None) for x, y in zip(a, b, strict=True)]
    found = stats.interval(differences, metric, "mean", CONFIDENCE)
    method = found.method.replace("t over seeds", "paired t over seeds on per-seed differences", 1)
    return stats.Interval(estimate, found.low, found.high, method)


def _scaled(interval: stats.Interval, scale: float) -> tuple[float, float | None, float | None]:
    def times(value: float | None) -> float | None:
        return None if value is None else value * scale

    return interval.estimate * scale, times(interval.low), times(interval.high)


# --- rows and claims ---------------------------------------------------------------------------------------
def _row_verdict(
    row: ReportedRow, reported: Reported, results: list[RunResult], dry_run: bool, prefer: str | None = None
) -> RowVerdict:
    model = None if dry_run else reported.model_of(row)
    tolerance = row.tolerance if row.tolerance is not None else reported.tolerance
    margin = margin_of(tolerance, row.spread)
    measured = _measure(
        results, row.task, row.method, row.metric, model, reported.scale, reported.aggregation, prefer
    )
    value = low = high = method = None
    flags: list[str] = []
    if row.run and measured.n:
        interval = _arm_interval(measured.scores(), row.metric, reported.aggregation)
        value, low, high = _scaled(interval, reported.scale)
        method = interval.method
        flags = _flags(measured, reported, dry_run)
    difference = None if value is None or row.reported is None else value - row.reported
    if not row.run:
        verdict = "not run (reference)"
    elif value is None:
        verdict = "not run (no result)"
    elif row.reported is None:
        verdict = "measured (no reported figure)"
    else:
        verdict = _capped(
            equivalence_verdict(low, high, row.reported, margin), seed_cap(measured.n, reported.seeds), flags
        )
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
        margin=margin,
        measured=value,
        low=low,
        high=high,
        interval_method=method,
        mean=measured.mean if row.run else None,
        std=measured.std if row.run else None,
        n=measured.n if row.run else 0,
        seeds=measured.seeds if row.run else [],
        fingerprint=measured.fingerprint if row.run else None,
        difference=difference,
        verdict=verdict,
        flags=flags,
        note=row.note,
    )


def _is_number(token: str | None) -> bool:
    try:
        float(token)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _claim_verdict(
    claim: Claim, reported: Reported, results: list[RunResult], dry_run: bool, prefer: str | None = None
) -> ClaimVerdict:
    model = None if dry_run else reported.model_of(claim)
    arms = {
        name: _measure(
            results, claim.task, name, claim.metric, model, reported.scale, reported.aggregation, prefer
        )
        for name in claim.methods
    }
    counts = {name: m.n for name, m in arms.items()}
    # `a OP b` is `a - b OP 0`; `a - b OP x` and `|a - b| OP x` difference two arms; `a OP x` is one arm.
    if claim.minus is not None:
        first, second, threshold = claim.left, claim.minus, claim.right
    elif _is_number(claim.right):
        first, second, threshold = claim.left, None, claim.right
    else:
        first, second, threshold = claim.left, claim.right, "0"
    verdict_kwargs: dict[str, Any] = dict(
        claim=claim.text, task=claim.task, metric=claim.metric, note=claim.note
    )
    if not _is_number(threshold):  # `a - b OP c`: a three-arm contrast, which no interval here covers
        return ClaimVerdict(
            left_value=None, right_value=None, low=None, high=None, interval_method=None,
            verdict="not judged (a - b OP c compares three arms)", n=counts, **verdict_kwargs,
        )  # fmt: skip
    x = float(threshold)
    if any(m.n == 0 for m in arms.values()):
        return ClaimVerdict(
            left_value=None, right_value=x, low=None, high=None, interval_method=None, verdict="not run",
            n=counts, **verdict_kwargs,
        )  # fmt: skip
    flags = [f"{name}: {flag}" for name, m in arms.items() for flag in _selection_flags(m)]
    if second is None:
        used, n_used = arms[first].seeds, arms[first].n
        interval = _arm_interval(arms[first].scores(), claim.metric, reported.aggregation)
    else:
        a, b = arms[first], arms[second]
        common = set(a.seeds) & set(b.seeds)
        if common:  # pair on the common seeds; a seed one arm lacks has no partner
            left_out = [
                f"{name} seed {s}"
                for name, m in ((first, a), (second, b))
                for s in m.seeds
                if s not in common
            ]
            if left_out:
                seeds_text = " ".join(map(str, sorted(common)))
                flags.append(f"paired on common seeds {seeds_text} ({', '.join(left_out)} left out)")
            used, n_used = sorted(common), len(common)
            a_scores, b_scores = a.scores(common), b.scores(common)
        else:
            used, n_used = sorted(set(a.seeds) | set(b.seeds)), min(a.n, b.n)
            a_scores, b_scores = a.scores(), b.scores()
            flags.append("no common seeds: unpaired")
        interval = _difference_interval(a_scores, b_scores, claim.metric, reported.aggregation)
    estimate, low, high = _scaled(interval, reported.scale)
    verdict = claim_interval_verdict(low, high, claim.operator, x, claim.absolute)
    verdict = _capped(verdict, seed_cap(n_used, reported.seeds), flags)
    if dry_run:
        flags.append("dry run on stand-in models: not a measurement")
    return ClaimVerdict(
        left_value=estimate, right_value=x, low=low, high=high, interval_method=interval.method,
        verdict=verdict, n=counts, seeds=used, flags=flags, **verdict_kwargs,
    )  # fmt: skip


def _mean_of(results: list[RunResult], key: str) -> float | None:
    values = [r.efficiency.get(key) for r in results]
    values = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.fmean(values) if values else None


def _arm_summaries(
    reported: Reported, results: list[RunResult], dry_run: bool, prefer: str | None = None
) -> list[ArmSummary]:
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
        measured = _measure(
            results, task, method, metric, model, reported.scale, reported.aggregation, prefer
        )
        aggregate = low = high = interval_method = None
        if measured.n:
            interval = _arm_interval(measured.scores(), metric, reported.aggregation)
            aggregate, low, high = _scaled(interval, reported.scale)
            interval_method = interval.method
        summaries.append(
            ArmSummary(
                task=task,
                method=method,
                metric=metric,
                aggregate=aggregate,
                low=low,
                high=high,
                interval_method=interval_method,
                mean=measured.mean,
                std=measured.std,
                n=measured.n,
                seeds=measured.seeds,
                fingerprint=measured.fingerprint,
                trainable_pct=_mean_of(measured.runs, "trainable_ratio_pct"),
                samples_per_s=_mean_of(measured.runs, "train_samples_per_s"),
                train_time_s=_mean_of(measured.runs, "train_time_s"),
                flags=_selection_flags(measured),
            )
        )
    return summaries


def compare(
    reported: Reported,
    results: list[RunResult],
    experiment: str,
    dry_run: bool = False,
    skipped: list[str] | None = None,
    prefer: str | None = None,
) -> Comparison:
    """Every reported row and claim against the results; ``prefer`` (``tuned``): an arm's runs of that variant
    stand for it where it has them (``_measure``)."""
    return Comparison(
        paper=reported.paper,
        experiment=experiment,
        aggregation=reported.aggregation,
        seeds=reported.seeds,
        scale=reported.scale,
        conventions=reported.conventions,
        rows=[_row_verdict(row, reported, results, dry_run, prefer) for row in reported.rows],
        claims=[_claim_verdict(claim, reported, results, dry_run, prefer) for claim in reported.claims],
        dry_run=dry_run,
        arms=_arm_summaries(reported, results, dry_run, prefer),
        skipped=list(skipped or []),
    )


# --- another study's runs ---------------------------------------------------------------------------------
# Keys that describe the study or the reproduction itself, not how a run trained: never a recipe difference.
NOT_RECIPE = ("study", "reproduction", "recipe")
_UNSET = object()


def _shown(value: Any) -> str:
    if value is _UNSET:  # identity configs drop keys at their neutral default (lr_factor 1, no head_lr)
        return "its default"
    return json.dumps(value, default=str) if isinstance(value, list | dict) else str(value)


def recipe_differences(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Where runs judged from another study trained differently from this reproduction: one line per key and
    pair of values, naming the arms it holds for. ``pairs``: (arm, a measured run's config, the config this
    reproduction composes for that arm and task), both as ``fingerprint_config`` masks them (no seed, no paths).

    Written by hand: the leaderboard compares runs with each other, while this compares a run with a config
    that never ran; a dotted-key diff of two dicts is all it needs."""
    arms: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for arm, measured, own in pairs:
        left, right = flat_config(measured), flat_config(own)
        for key in sorted(set(left) | set(right)):
            if key.split(".")[0] in NOT_RECIPE:
                continue
            a, b = left.get(key, _UNSET), right.get(key, _UNSET)
            if a != b:
                arms[(key, _shown(a), _shown(b))].append(arm)
    return [
        f"`{key}`: {a} in the runs measured, {b} in this reproduction ({', '.join(sorted(names))})"
        for (key, a, b), names in sorted(arms.items())
    ]


# --- rendering ------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}"


def _interval(low: float | None, high: float | None, digits: int = 1) -> str:
    return "–" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


ROW_COLUMNS = (
    "source",
    "row",
    "task",
    "metric",
    "reported",
    "margin",
    "measured",
    "95% interval",
    "interval method",
    "mean ± std",
    "n",
    "diff",
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
        f"±{row.margin:.2f}" if row.reported is not None else "–",
        _num(row.measured),
        _interval(row.low, row.high),
        row.interval_method or "–",
        _pm(row.mean, row.std),
        str(row.n),
        "–" if row.difference is None else f"{row.difference:+.1f}",
        row.verdict + "".join(f" [{flag}]" for flag in row.flags),
    ]


def _methods_sentence(comparison: Comparison) -> str:
    """Which intervals the report holds, and what a seed-only one leaves out."""
    methods = sorted(
        {
            item.interval_method
            for item in (*comparison.rows, *comparison.claims, *comparison.arms)
            if item.interval_method
        }
    )
    if not methods:
        return ""
    text = "Intervals in this report: " + "; ".join(f"*{m}*" for m in methods) + "."
    if any("predictions" in m for m in methods):
        text += (
            " Runs without per-example predictions (result schema < 3) get seed-only intervals: a t interval "
            "on the seed mean (a bootstrap of a median over 3 seeds spans at most their range, which covers "
            "the median only 75 % of the time), which leaves out the finite test set's noise, so it speaks "
            "for this test split rather than the task."
        )
    return text


def _rule_paragraph(comparison: Comparison, aggregation: str) -> str:
    pct = f"{comparison.confidence:.0%}"
    parts = [
        f"**Verdicts.** Each arm is measured on one configuration (the fingerprint with the most seeds). "
        f"Measured = the paper's aggregation ({aggregation}) of its runs, in the paper's units "
        f"(x{comparison.scale:g}), with a {pct} interval: a bootstrap over seeds x test examples when the "
        "runs stored predictions, else a t interval over seeds.",
    ]
    if comparison.rows:
        parts.append(
            "A row is *reproduced* when the whole interval lies inside reported ± margin, margin = "
            "sqrt(tolerance² + paper's ±²) with the tolerance declared in reported.yaml before running; *not "
            "reproduced* when the interval lies entirely outside that band; *inconclusive* when it "
            "straddles an edge."
        )
    if comparison.claims:
        parts.append(
            f"A claim (written before running) gets a {pct} interval on its left side (a - b paired by seed, "
            "and by example when stored; or a alone): it *holds* when the whole interval satisfies it, "
            "*fails* when none of it does, and is *inconclusive* otherwise; for |a - b| <= x the interval on "
            "a - b must lie inside [-x, x]."
        )
    parts.append(
        "With one seed, or fewer seeds than the paper aggregates, a verdict is at most inconclusive."
    )
    return " ".join(parts)


def to_markdown(comparison: Comparison) -> str:
    lines = [f"# Reproduction: {comparison.experiment}", "", f"**Paper / study:** {comparison.paper}", ""]
    if comparison.dry_run:
        lines += [
            "> **Dry run** on stand-in models and fixtures: it checks the path, its numbers mean nothing.",
            "",
        ]
    aggregation = comparison.aggregation + (f" of {comparison.seeds} seeds" if comparison.seeds else "")
    lines += [_rule_paragraph(comparison, aggregation), ""]
    methods = _methods_sentence(comparison)
    if methods:
        lines += [methods, ""]
    if comparison.measured_study:
        lines += [
            f"**Runs measured.** These are study `{comparison.measured_study}`'s runs, not this reproduction's "
            + (
                "own: the conventions below describe the reproduction's runs. "
                if comparison.conventions
                else "own. "
            )
            + (
                "Where the measured runs' configuration differs from the one this reproduction composes for "
                "the same arm and task:"
                if comparison.differences
                else "Their configuration matches the one this reproduction composes for every arm measured."
            ),
            "",
        ]
        if comparison.differences:
            lines += [*(f"- {d}" for d in comparison.differences), ""]
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
            "| claim | task | metric | left side (estimate) | 95% interval | threshold | seeds "
            "| interval method | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for claim in comparison.claims:
            counts = ", ".join(f"{k}={v}" for k, v in claim.n.items())
            lines.append(
                f"| `{claim.claim}` | {claim.task} | {claim.metric} | {_num(claim.left_value, 2)} | "
                f"{_interval(claim.low, claim.high, 2)} | {_num(claim.right_value, 2)} | {counts} | "
                f"{claim.interval_method or '–'} | "
                + claim.verdict
                + "".join(f" [{flag}]" for flag in claim.flags)
                + " |"
            )
        lines.append("")
        notes = [f"- `{c.claim}`: {c.note}" for c in comparison.claims if c.note]
        if notes:
            lines += ["**Claim notes**", "", *notes, ""]
    measured_arms = [arm for arm in comparison.arms if arm.n]
    if measured_arms:
        aggregation = comparison.aggregation
        lines += [
            f"**Measured** ({aggregation} with its {comparison.confidence:.0%} interval, and mean ± std over "
            f"seeds, x{comparison.scale:g}; efficiency: means; config: the runs' configuration fingerprint)",
            "",
            f"| task | method | metric | {aggregation} | 95% interval | mean ± std | n | seeds | config | "
            "trainable % | samples/s | train s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for arm in measured_arms:
            config = (arm.fingerprint or "–") + "".join(f" [{flag}]" for flag in arm.flags)
            lines.append(
                f"| {arm.task} | {arm.method} | {arm.metric} | {_num(arm.aggregate, 2)} | "
                f"{_interval(arm.low, arm.high, 2)} | {_pm(arm.mean, arm.std)} | {arm.n} | "
                f"{' '.join(map(str, arm.seeds))} | {config} | {_num(arm.trainable_pct, 3)} | "
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
    if comparison.skipped:
        lines += ["", f"**Files skipped** ({len(comparison.skipped)}, not results):", ""]
        lines += [f"- {line}" for line in comparison.skipped]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "kind", "source", "label", "task", "model", "method", "metric", "reported", "spread", "tolerance",
    "margin", "measured", "ci_low", "ci_high", "interval_method", "mean", "std", "n", "seeds", "fingerprint",
    "difference", "verdict", "flags",
)  # fmt: skip


def to_csv(comparison: Comparison) -> str:
    """One line per row and per claim (a claim's ``reported``: its threshold; ``measured``: its left side)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in comparison.rows:
        writer.writerow(
            ["row", r.source, r.label, r.task, r.model, r.method, r.metric, r.reported, r.spread, r.tolerance,
             r.margin, r.measured, r.low, r.high, r.interval_method, r.mean, r.std, r.n,
             " ".join(map(str, r.seeds)), r.fingerprint, r.difference, r.verdict, "; ".join(r.flags)]
        )  # fmt: skip
    for c in comparison.claims:
        writer.writerow(
            ["claim", None, c.claim, c.task, None, " ".join(c.n), c.metric, c.right_value, None, None, None,
             c.left_value, c.low, c.high, c.interval_method, None, None, len(c.seeds),
             " ".join(map(str, c.seeds)), None, None, c.verdict, "; ".join(c.flags)]
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
