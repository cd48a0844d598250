"""Intervals, paired tests and multiple-comparison corrections for leaderboards and reproductions.

A benchmark score has two sources of noise: the seed (initialisation, data order) and the finite test set
(an 800-example accuracy near 0.8 has a standard error of ~1.4 points on its own). With per-example
predictions stored, every interval here is a *crossed* bootstrap: each resample draws seeds with replacement
AND test examples with replacement, using the same example indices for every seed (and for both arms of a
comparison), and recomputes the metric from the predictions. ``scipy.stats.bootstrap`` cannot do this: it
resamples one axis (or several samples along one shared axis), not a seeds x examples grid, and it would call
the metric once per resample in Python. So the resampling is hand-written and vectorised: metrics that are
sums over examples (accuracy, exact_match, mse, and every confusion-matrix metric: f1, precision, recall,
their macro forms, mcc; pearson through its sufficient statistics) become one matrix product of resample
counts with per-example terms. Only spearman (ranks change with every resample) loops.

Without predictions (result files before schema 3) only the seeds are left: scipy's t interval over seeds,
Welch's t test between rows. Every ``Interval`` says in words which one it is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from peftbench.results import RunResult

STATISTICS = ("mean", "median", "max", "single")
# Metrics whose per-example term averages to the metric: resampled as counts @ terms / n.
MEAN_METRICS = ("accuracy", "exact_match", "mse")
# Metrics computed from a confusion matrix (rows = true class, columns = predicted), as torchmetrics does.
CONFUSION_METRICS = ("f1", "precision", "recall", "f1_macro", "precision_macro", "recall_macro", "mcc")
METRICS = (*MEAN_METRICS, *CONFUSION_METRICS, "pearson", "spearman")
# Resamples are processed in blocks of this many, so a 10k-example test set needs ~10 MB per block.
_BLOCK = 250
# torchmetrics' spearman adds this to the denominator (SpearmanCorrCoef's eps); kept to agree with it.
_SPEARMAN_EPS = 1e-6


@dataclass(frozen=True)
class Interval:
    """An estimate and its interval, with the method in words (tables print it next to the number)."""

    estimate: float
    low: float | None  # None when no interval can be given (one seed and no predictions)
    high: float | None
    method: str

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


@dataclass(frozen=True)
class Scores:
    """One run's figures for one metric: the recorded value and, when stored, its per-example predictions."""

    seed: int
    value: float  # the recorded test/<metric>
    pred: np.ndarray | None  # per-example predictions (None: older file, or a partial record)
    label: np.ndarray | None

    @property
    def has_predictions(self) -> bool:
        return self.pred is not None and self.label is not None and len(self.pred) > 0


def higher_is_better(metric: str) -> bool:
    """The built-in metric's declared direction (peftbench.tasks.metrics.BUILTIN); losses are lower-is-better,
    and any other name (a custom metric) is taken as higher-is-better, as task metrics default."""
    from peftbench.tasks.metrics import BUILTIN  # torchmetrics loads only when a direction is asked for

    if metric in BUILTIN:
        return bool(BUILTIN[metric].higher_is_better)
    return not metric.endswith("loss")


def scores_of(result: RunResult, metric: str, split: str = "test") -> Scores | None:
    """The run's ``metric`` on a reported split (``test``, ``test_mismatched``) with its predictions.

    Metric keys follow the LightningModule's naming: ``test/<metric>`` for the test split and
    ``test/<metric>_<suffix>`` for ``test_<suffix>``. None when the metric is missing or NaN. A record marked
    ``partial`` (``trainer.limit_test_batches``) has no predictions here: it would not pair with full ones.
    """
    suffix = split.removeprefix("test")
    value = (result.test or {}).get(f"test/{metric}{suffix}")
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return None
    record = (result.predictions or {}).get(split) or {}
    pred, label = record.get("pred"), record.get("label")
    if record.get("partial") or pred is None or label is None or len(pred) != len(label) or not len(pred):
        pred_array = label_array = None
    else:
        pred_array, label_array = np.asarray(pred), np.asarray(label)
    return Scores(seed=int(result.seed), value=float(value), pred=pred_array, label=label_array)


# --- metrics ------------------------------------------------------------------------------------------------


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (torchmetrics' zero_division=0)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _mcc_degenerate(confusion: np.ndarray) -> float:
    """torchmetrics' special cases of a binary MCC whose denominator is 0 (all one class, ...), as it does."""
    tn, fp, fn, tp = (float(v) for v in confusion.reshape(-1))
    if tp + tn != 0 and fp + fn == 0:
        return 1.0
    if tp + tn == 0 and fp + fn != 0:
        return -1.0
    eps = float(np.finfo(np.float32).eps)
    if fn == 0 and tn == 0:
        numerator = math.sqrt(eps) * (tp - fp)
    elif fp == 0 and tn == 0:
        numerator = math.sqrt(eps) * (tp - fn)
    elif tp == 0 and fn == 0:
        numerator = math.sqrt(eps) * (tn - fp)
    elif tp == 0 and fp == 0:
        numerator = math.sqrt(eps) * (tn - fn)
    elif tp == 0:
        numerator = tn - fp * fn
    elif tn == 0:
        numerator = tp - fp * fn
    elif fp == 0 or fn == 0:
        numerator = tp * tn
    else:
        return 0.0
    denominator = (tp + fp + eps) * (tp + fn + eps) * (tn + fp + eps) * (tn + fn + eps)
    return numerator / math.sqrt(denominator)


def _from_confusion(metric: str, confusion: np.ndarray) -> np.ndarray:
    """A confusion-matrix metric for a stack of matrices (..., K, K): rows true class, columns predicted.

    Definitions follow torchmetrics: binary f1/precision/recall with class 1 positive; macro averages skip
    classes absent from both predictions and labels (tp + fp + fn = 0); 0 where a ratio's denominator is 0.
    """
    confusion = confusion.astype(float)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    fp = confusion.sum(-2) - tp
    fn = confusion.sum(-1) - tp
    if metric in ("f1", "precision", "recall"):
        if confusion.shape[-1] != 2:
            raise ValueError(
                f"{metric} is binary (class 1 positive); predictions hold {confusion.shape[-1]} classes"
            )
        tp1, fp1, fn1 = tp[..., 1], fp[..., 1], fn[..., 1]
        if metric == "f1":
            return _safe_divide(2 * tp1, 2 * tp1 + fp1 + fn1)
        return _safe_divide(tp1, tp1 + (fp1 if metric == "precision" else fn1))
    if metric in ("f1_macro", "precision_macro", "recall_macro"):
        per_class = {
            "f1_macro": lambda: _safe_divide(2 * tp, 2 * tp + fp + fn),
            "precision_macro": lambda: _safe_divide(tp, tp + fp),
            "recall_macro": lambda: _safe_divide(tp, tp + fn),
        }[metric]()
        weights = (tp + fp + fn > 0).astype(float)
        return _safe_divide((per_class * weights).sum(-1), weights.sum(-1))
    if metric == "mcc":
        true_totals, pred_totals = confusion.sum(-1), confusion.sum(-2)
        correct, total = tp.sum(-1), confusion.sum((-2, -1))
        cov_true_pred = correct * total - (true_totals * pred_totals).sum(-1)
        cov_pred = total**2 - (pred_totals**2).sum(-1)
        cov_true = total**2 - (true_totals**2).sum(-1)
        denominator = cov_pred * cov_true
        out = _safe_divide(cov_true_pred, np.sqrt(np.abs(denominator)))
        degenerate = denominator == 0
        if confusion.shape[-1] == 2 and degenerate.any():
            flat, mask = confusion.reshape(-1, 2, 2), degenerate.reshape(-1)
            values = out.reshape(-1)
            values[mask] = [_mcc_degenerate(c) for c in flat[mask]]
            out = values.reshape(out.shape)
        return out
    raise ValueError(f"{metric} is not a confusion-matrix metric")


def _num_classes(*arrays: np.ndarray) -> int:
    """Classes a confusion matrix needs: the largest class id seen plus one (at least 2, the binary case)."""
    return max(2, *(int(np.max(a)) + 1 for a in arrays if len(a)))


def _confusion(pred: np.ndarray, label: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(label.astype(int) * classes + pred.astype(int), minlength=classes * classes).reshape(
        classes, classes
    )


def _pearson_from_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson r from weighted sums (..., 6) = (w, x, y, xx, yy, xy) of centred values; NaN for zero variance."""
    weight, sx, sy, sxx, syy, sxy = np.moveaxis(sums, -1, 0)
    cov = sxy - sx * sy / weight
    var_x, var_y = sxx - sx**2 / weight, syy - sy**2 / weight
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    return np.where((var_x > 0) & (var_y > 0), np.clip(r, -1.0, 1.0), np.nan)


def _pearson_terms(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-example (1, x, y, xx, yy, xy), centred on the full sample's means to keep the sums well conditioned."""
    x = pred.astype(float) - pred.astype(float).mean()
    y = label.astype(float) - label.astype(float).mean()
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def _spearman(pred: np.ndarray, label: np.ndarray) -> float:
    """Pearson of average ranks with torchmetrics' eps in the denominator (population standard deviations)."""
    x = sps.rankdata(pred.astype(float))
    y = sps.rankdata(label.astype(float))
    x, y = x - x.mean(), y - y.mean()
    r = (x * y).mean() / (math.sqrt((x * x).mean()) * math.sqrt((y * y).mean()) + _SPEARMAN_EPS)
    return float(min(1.0, max(-1.0, r)))


def _per_example(metric: str, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The per-example term whose mean is the metric (accuracy, exact_match, mse)."""
    if metric == "mse":
        return (pred.astype(float) - label.astype(float)) ** 2
    if metric == "exact_match":  # answers are stored normalised (generation.ExactMatch compares them as is)
        return np.asarray([str(p) == str(t) for p, t in zip(pred, label, strict=True)], dtype=float)
    return (pred == label).astype(float)


def metric_value(
    metric: str, pred: np.ndarray, label: np.ndarray, *, num_classes: int | None = None
) -> float:
    """``metric`` of predictions against labels, by the definitions of the torchmetrics the runs used.

    Classification metrics take class ids; the confusion matrix has ``num_classes`` classes (default: the
    largest class id seen plus one, at least 2; it only matters for MCC's special cases of a binary matrix
    with a zero denominator, which torchmetrics applies only when the task has 2 classes). Regression metrics
    take floats, exact_match strings. Computed in float64 (torchmetrics in float32: agreement to ~1e-6).
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if len(pred) != len(label):
        raise ValueError(f"{len(pred)} predictions for {len(label)} labels")
    if metric in MEAN_METRICS:
        return float(_per_example(metric, pred, label).mean())
    if metric in CONFUSION_METRICS:
        classes = num_classes or _num_classes(pred, label)
        return float(_from_confusion(metric, _confusion(pred, label, classes)))
    if metric == "pearson":
        return float(_pearson_from_sums(_pearson_terms(pred, label).sum(0)))
    if metric == "spearman":
        return _spearman(pred, label)
    raise ValueError(f"metric {metric!r} cannot be recomputed from predictions (known: {', '.join(METRICS)})")


# --- resampling ---------------------------------------------------------------------------------------------


def _run_resampler(metric: str, run: Scores) -> Callable[[np.ndarray], np.ndarray]:
    """A function of resample counts (C, n) -> the run's metric in each of the C resamples (C,)."""
    pred, label = run.pred, run.label
    assert pred is not None and label is not None
    n = len(label)
    if metric in MEAN_METRICS:
        terms = _per_example(metric, pred, label)
        return lambda counts: counts @ terms / n
    if metric in CONFUSION_METRICS:
        classes = _num_classes(pred, label)
        cells = label.astype(int) * classes + pred.astype(int)
        onehot = np.zeros((n, classes * classes))
        onehot[np.arange(n), cells] = 1.0
        return lambda counts: _from_confusion(metric, (counts @ onehot).reshape(-1, classes, classes))
    if metric == "pearson":
        terms = _pearson_terms(pred, label)
        return lambda counts: _pearson_from_sums(counts @ terms)
    if metric == "spearman":  # ranks depend on which examples were drawn: no sum to vectorise, so loop

        def loop(counts: np.ndarray) -> np.ndarray:
            rows = np.arange(n)
            return np.array(
                [_spearman(pred[idx], label[idx]) for idx in (np.repeat(rows, c.astype(int)) for c in counts)]
            )

        return loop
    raise ValueError(f"metric {metric!r} cannot be recomputed from predictions (known: {', '.join(METRICS)})")


def _example_counts(rng: np.random.Generator, n_resamples: int, n: int) -> list[np.ndarray]:
    """How often each example is drawn in each resample (blocks of (C, n)): n draws with replacement."""
    blocks = []
    for start in range(0, n_resamples, _BLOCK):
        size = min(_BLOCK, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        blocks.append(np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float))
    return blocks


def _resampled_values(metric: str, runs: Sequence[Scores], count_blocks: list[np.ndarray]) -> np.ndarray:
    """(n_resamples, k): each run's metric under each resample of the test examples (same rows for all runs)."""
    columns = []
    for run in runs:
        resample = _run_resampler(metric, run)
        columns.append(np.concatenate([resample(block) for block in count_blocks]))
    return np.stack(columns, axis=1)


def aggregate(values: Sequence[float], statistic: str) -> float:
    """The statistic over seeds of the recorded figures, in seed order (``single``: the first). The mean is math.fsum's (exactly rounded, so independent of
    the order of the seeds): two rows with the same figures in another seed order tie exactly."""
    if statistic == "mean":
        return math.fsum(values) / len(values)
    return float(_statistic(np.asarray(values, dtype=float), statistic))


def _statistic(values: np.ndarray, statistic: str) -> np.ndarray:
    """The statistic over seeds, along the last axis ("single": the first run, i.e. the lowest seed)."""
    if statistic == "mean":
        return values.mean(-1)
    if statistic == "median":
        return np.median(values, axis=-1)
    if statistic == "max":
        return values.max(-1)
    if statistic == "single":
        return values[..., 0]
    raise ValueError(f"statistic {statistic!r}: allowed {', '.join(STATISTICS)}")


def _seed_draws(rng: np.random.Generator, n_resamples: int, k: int, statistic: str) -> np.ndarray:
    """(n_resamples, k) seed positions drawn with replacement ("single" keeps its one run: nothing to draw)."""
    if statistic == "single" or k == 1:
        return np.zeros((n_resamples, 1 if statistic == "single" else k), dtype=int)
    return rng.integers(0, k, size=(n_resamples, k))


def _pick(values: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """values (B, k) at the drawn seed positions seeds (B, k') -> (B, k')."""
    return np.take_along_axis(values, seeds, axis=1)


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def _sorted_runs(runs: Sequence[Scores]) -> list[Scores]:
    return sorted(runs, key=lambda r: r.seed)


def _pairable(runs: Sequence[Scores]) -> bool:
    """Every run stored complete predictions of one test set (same size and labels): they pair by example."""
    if not runs or not all(r.has_predictions for r in runs):
        return False
    first = runs[0].label
    assert first is not None
    return all(
        r.label is not None and len(r.label) == len(first) and np.array_equal(r.label, first) for r in runs
    )


def _recomputable(metric: str) -> bool:
    return metric in METRICS


def _seed_only_reason(runs: Sequence[Scores], metric: str) -> str:
    if not all(r.has_predictions for r in runs):
        return "no per-example predictions"
    if not _recomputable(metric):
        return f"{metric} not recomputable from predictions"
    return "predictions of different test sets"


def interval(
    runs: Sequence[Scores],
    metric: str,
    statistic: str = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """A ``confidence`` interval on ``statistic`` over seeds of ``metric``.

    With predictions on every run: the crossed percentile bootstrap (seeds and test examples resampled, the
    same examples for every seed). Without: scipy's t interval over seeds for the mean (n >= 2), a bootstrap
    over seeds for the other statistics, nothing with one seed. The estimate is always the statistic of the
    recorded values.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: allowed {', '.join(STATISTICS)}")
    runs = _sorted_runs(runs)
    if not runs:
        raise ValueError("interval of no runs")
    recorded = np.array([r.value for r in runs])
    estimate = aggregate(recorded.tolist(), statistic)
    k = len(runs)
    rng = np.random.default_rng(seed)
    if _pairable(runs) and _recomputable(metric):
        blocks = _example_counts(rng, n_resamples, len(runs[0].label))  # type: ignore[arg-type]
        values = _resampled_values(metric, runs, blocks)
        draws = _statistic(_pick(values, _seed_draws(rng, n_resamples, k, statistic)), statistic)
        what = "test examples" if statistic == "single" or k == 1 else "seeds x test examples"
        low, high = _percentile(draws, confidence)
        return Interval(estimate, low, high, f"bootstrap over {what}")
    reason = _seed_only_reason(runs, metric)
    if statistic == "single" or k == 1:
        return Interval(estimate, None, None, f"none ({k} seed{'s' if k > 1 else ''}, {reason})")
    if statistic == "mean":
        return Interval(estimate, *_t_interval(recorded, confidence), f"t over seeds ({reason})")
    draws = _statistic(
        _pick(np.tile(recorded, (n_resamples, 1)), _seed_draws(rng, n_resamples, k, statistic)), statistic
    )
    return Interval(estimate, *_percentile(draws, confidence), f"bootstrap over seeds ({reason})")


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample standard deviation (0 with one seed) and median of per-seed figures: the plain description
    every table prints beside its interval."""

    n: int
    mean: float | None
    std: float | None
    median: float | None


def summarize(values: Sequence[float]) -> SeedSummary:
    values = list(values)
    if not values:
        return SeedSummary(0, None, None, None)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedSummary(len(values), aggregate(values, "mean"), std, statistics.median(values))


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student t interval on the mean (scipy); zero width when every seed gave the same figure."""
    mean = math.fsum(values) / len(values)
    if np.ptp(values) == 0:  # scipy's sem would be rounding noise (1e-16), not 0
        return mean, mean
    sem = float(sps.sem(values))
    low, high = sps.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p-value of "difference = 0" by inverting the percentile interval: twice the smaller tail share
    of the bootstrap distribution on either side of 0 (+1 in numerator and denominator: never exactly 0)."""
    draws = draws[np.isfinite(draws)]
    below, above = np.count_nonzero(draws <= 0), np.count_nonzero(draws >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1)))


def paired_difference(
    a: Sequence[Scores],
    b: Sequence[Scores],
    metric: str,
    statistic: str = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[Interval, float]:
    """Interval on statistic(a) - statistic(b) and a two-sided p-value for "no difference".

    With predictions of one test set on every run, both arms are resampled together: the same example indices,
    and (when both have the same seeds) the same seed positions, so what the two share (test examples, the
    seed's data order) cancels in the difference. Seeds that differ are drawn separately for each arm, examples
    still shared. The p-value inverts the percentile bootstrap interval, so p < 1 - confidence exactly when the
    interval excludes 0 (up to resampling resolution). Without predictions: Welch's t test and interval over
    seeds (unpaired; scipy), and the method says so.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: allowed {', '.join(STATISTICS)}")
    a, b = _sorted_runs(a), _sorted_runs(b)
    if not a or not b:
        raise ValueError("paired_difference needs runs on both sides")
    value_a, value_b = np.array([r.value for r in a]), np.array([r.value for r in b])
    estimate = aggregate(value_a.tolist(), statistic) - aggregate(value_b.tolist(), statistic)
    rng = np.random.default_rng(seed)
    if _pairable([*a, *b]) and _recomputable(metric):
        blocks = _example_counts(rng, n_resamples, len(a[0].label))  # type: ignore[arg-type]
        values_a, values_b = _resampled_values(metric, a, blocks), _resampled_values(metric, b, blocks)
        same_seeds = [r.seed for r in a] == [r.seed for r in b]
        seeds_a = _seed_draws(rng, n_resamples, len(a), statistic)
        seeds_b = seeds_a if same_seeds else _seed_draws(rng, n_resamples, len(b), statistic)
        draws = _statistic(_pick(values_a, seeds_a), statistic) - _statistic(
            _pick(values_b, seeds_b), statistic
        )
        if statistic == "single" or (len(a) == 1 and len(b) == 1):
            what = "paired bootstrap over test examples"
        elif same_seeds:
            what = "paired bootstrap over seeds x test examples"
        else:
            what = "bootstrap paired by test example, seeds drawn per arm (seed sets differ)"
        low, high = _percentile(draws, confidence)
        return Interval(estimate, low, high, what), _bootstrap_p(draws)
    reason = _seed_only_reason([*a, *b], metric)
    if statistic != "mean" or len(a) < 2 or len(b) < 2:
        return Interval(
            estimate, None, None, f"none (needs the mean over >= 2 seeds per arm; {reason})"
        ), math.nan
    return _welch(value_a, value_b, estimate, confidence, reason)


def _welch(
    a: np.ndarray, b: np.ndarray, estimate: float, confidence: float, reason: str
) -> tuple[Interval, float]:
    """Welch's unequal-variance t test over seeds (scipy), with its interval on the difference of means."""
    method = f"Welch t over seeds, unpaired ({reason})"
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread on either side: t is undefined, the difference exact
        return Interval(estimate, estimate, estimate, method), 1.0 if estimate == 0 else 0.0
    test = sps.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(confidence)
    return Interval(estimate, float(ci.low), float(ci.high), method), float(test.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order; NaN entries stay NaN and do not count as tests.

    Hand-written (scipy has only Benjamini-Hochberg, ``false_discovery_control``): the i-th smallest of m
    p-values is multiplied by (m - i + 1), made non-decreasing in that order, and capped at 1.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m, running, out = len(indexed), 0.0, [math.nan] * len(p_values)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def tie_group(
    difference: Interval | None, p_adjusted: float, alpha: float, metric: str, reference: str = "best"
) -> str:
    """A row's group against the reference row: ``reference`` (the reference itself, difference None),
    ``untested`` (no test possible: e.g. one seed against results without per-example predictions), ``tied``
    (Holm-adjusted p >= alpha), else ``better``/``worse`` by the sign of the difference in the metric's
    direction."""
    if difference is None:
        return reference
    if math.isnan(p_adjusted):
        return "untested"
    if p_adjusted >= alpha:
        return "tied"
    better = difference.estimate > 0 if higher_is_better(metric) else difference.estimate < 0
    return "better" if better else "worse"


def _dominated(scores: np.ndarray, costs: np.ndarray, lower_cost_is_better: bool) -> np.ndarray:
    """(B, R) scores (higher better) and (R,) costs -> (B, R): some other row is at least as good on both axes
    and strictly better on one. Equal points do not dominate each other (both are on the front)."""
    cost = costs if lower_cost_is_better else -costs
    cost_le = cost[None, :, None] <= cost[None, None, :]  # [., j, r]: j costs no more than r
    cost_lt = cost[None, :, None] < cost[None, None, :]
    score_ge = scores[:, :, None] >= scores[:, None, :]
    score_gt = scores[:, :, None] > scores[:, None, :]
    return (cost_le & score_ge & (cost_lt | score_gt)).any(axis=1)


def pareto_front(
    scores: Sequence[float], costs: Sequence[float], metric: str, lower_cost_is_better: bool = True
) -> list[bool]:
    """Whether each row is on the Pareto front of (cost, score) (the score in the metric's direction)."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    matrix = sign * np.asarray(scores, dtype=float)[None, :]
    return [not d for d in _dominated(matrix, np.asarray(costs, dtype=float), lower_cost_is_better)[0]]


def pareto_probability(
    rows: Sequence[Sequence[Scores]],
    costs: Sequence[float],
    metric: str,
    lower_cost_is_better: bool = True,
    statistic: str = "mean",
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[list[float], str]:
    """Share of bootstrap resamples in which each row is on the Pareto front, and how they were drawn.

    In every resample each row's score is recomputed (statistic over resampled seeds of the metric on the
    resampled test examples, the same examples for every row, the same seed positions for rows that ran the
    same seeds) and the front is recomputed from those scores. Costs stay at the given figures (their seed
    spread is small next to the score's). When any row lacks predictions, every row resamples its seeds only.
    """
    rows = [_sorted_runs(r) for r in rows]
    if len(rows) != len(costs):
        raise ValueError(f"{len(rows)} rows for {len(costs)} costs")
    if not rows:
        return [], "no rows"
    rng = np.random.default_rng(seed)
    everything = [run for row in rows for run in row]
    with_examples = _pairable(everything) and _recomputable(metric)
    if with_examples:
        blocks = _example_counts(rng, n_resamples, len(everything[0].label))  # type: ignore[arg-type]
        per_row = [_resampled_values(metric, row, blocks) for row in rows]
        method = "bootstrap over seeds x test examples"
    else:
        per_row = [np.tile([r.value for r in row], (n_resamples, 1)) for row in rows]
        method = f"bootstrap over seeds only ({_seed_only_reason(everything, metric)})"
    draws_by_seeds: dict[tuple[int, ...], np.ndarray] = {}
    columns = []
    for row, values in zip(rows, per_row, strict=True):
        seeds = tuple(r.seed for r in row)
        if seeds not in draws_by_seeds:
            draws_by_seeds[seeds] = _seed_draws(rng, n_resamples, len(row), statistic)
        columns.append(_statistic(_pick(values, draws_by_seeds[seeds]), statistic))
    sign = 1.0 if higher_is_better(metric) else -1.0
    scores = sign * np.stack(columns, axis=1)
    dominated = _dominated(scores, np.asarray(costs, dtype=float), lower_cost_is_better)
    return [float(p) for p in (~dominated).mean(axis=0)], method
