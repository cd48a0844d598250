"""peftbench.stats: metric definitions (against torchmetrics), intervals, paired tests, Holm, Pareto probabilities."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torchmetrics import classification as C
from torchmetrics import regression as R

from peftbench import stats
from peftbench.results import RunResult
from peftbench.stats import Scores


def _torchmetrics(metric: str, pred: np.ndarray, label: np.ndarray, classes: int) -> float:
    factories = {
        "accuracy": lambda: C.MulticlassAccuracy(num_classes=classes, average="micro"),
        "f1": C.BinaryF1Score,
        "precision": C.BinaryPrecision,
        "recall": C.BinaryRecall,
        "f1_macro": lambda: C.MulticlassF1Score(num_classes=classes, average="macro"),
        "precision_macro": lambda: C.MulticlassPrecision(num_classes=classes, average="macro"),
        "recall_macro": lambda: C.MulticlassRecall(num_classes=classes, average="macro"),
        "mcc": lambda: C.MulticlassMatthewsCorrCoef(num_classes=classes),
        "pearson": R.PearsonCorrCoef,
        "spearman": R.SpearmanCorrCoef,
        "mse": R.MeanSquaredError,
    }
    as_tensor = (
        (lambda a: torch.tensor(a, dtype=torch.float32))
        if metric in ("pearson", "spearman", "mse")
        else torch.tensor
    )
    return float(factories[metric]()(as_tensor(pred), as_tensor(label)))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics' spearman buffer warning
@pytest.mark.parametrize("classes", [2, 3])
def test_metric_value_agrees_with_torchmetrics(classes: int) -> None:
    rng = np.random.default_rng(classes)
    metrics = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc"]
    metrics += ["f1", "precision", "recall"] if classes == 2 else []
    for trial in range(8):
        n = int(rng.integers(3, 400))
        label = rng.integers(0, classes, n)
        pred = np.where(rng.random(n) < 0.7, label, rng.integers(0, classes, n))
        if trial == 0:
            pred = np.zeros(n, dtype=int)  # one predicted class: zero divisions and MCC's degenerate cases
        if trial == 1:
            pred, label = np.ones(n, dtype=int), np.ones(n, dtype=int)
        for metric in metrics:
            expected = _torchmetrics(metric, pred, label, classes)
            value = stats.metric_value(metric, pred, label, num_classes=classes)
            assert value == pytest.approx(expected, abs=1e-6), (metric, trial)
    for trial in range(4):
        label = rng.normal(size=300)
        pred = label + rng.normal(scale=1.0 + trial, size=300)
        if trial == 3:
            pred = np.round(pred)  # ties: average ranks, as torchmetrics
        for metric in ("pearson", "spearman", "mse"):
            expected = _torchmetrics(metric, pred, label, 0)
            assert stats.metric_value(metric, pred, label) == pytest.approx(expected, abs=1e-5), metric
    assert stats.metric_value(
        "exact_match", np.array(["4", "x", "7"]), np.array(["4", "5", "7"])
    ) == pytest.approx(2 / 3)


def test_vectorised_resampling_equals_recomputing_each_resample() -> None:
    """The counts @ terms shortcut must give what metric_value gives on the resampled rows themselves."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.6, label, rng.integers(0, 3, 200))
    x = rng.normal(size=200)
    runs = {
        "accuracy": Scores(1, 0.0, pred, label),
        "f1_macro": Scores(1, 0.0, pred, label),
        "mcc": Scores(1, 0.0, pred, label),
        "pearson": Scores(1, 0.0, x + rng.normal(size=200), x),
        "spearman": Scores(1, 0.0, x + rng.normal(size=200), x),
    }
    (counts,) = stats._example_counts(np.random.default_rng(1), 20, 200)
    for metric, run in runs.items():
        fast = stats._resampled_values(metric, [run], [counts])[:, 0]
        rows = [np.repeat(np.arange(200), c.astype(int)) for c in counts]
        slow = [stats.metric_value(metric, run.pred[r], run.label[r]) for r in rows]
        np.testing.assert_allclose(fast, slow, atol=1e-9, err_msg=metric)


def _correct(rng: np.random.Generator, n: int, accuracy: float) -> np.ndarray:
    """Binary predictions against all-ones labels with exactly round(accuracy * n) correct."""
    pred = np.zeros(n, dtype=int)
    pred[rng.choice(n, round(accuracy * n), replace=False)] = 1
    return pred


def test_example_bootstrap_is_wider_than_the_seed_spread() -> None:
    """Three seeds with identical predictions: no seed spread at all, but 800 test examples still leave
    sqrt(0.8 * 0.2 / 800) = 1.4 points of standard error, a 95 % half-width of ~2.8 points."""
    pred, label = _correct(np.random.default_rng(0), 800, 0.8), np.ones(800, dtype=int)
    runs = [Scores(seed, 0.8, pred, label) for seed in (1, 2, 3)]
    crossed = stats.interval(runs, "accuracy")
    assert crossed.method == "bootstrap over seeds x test examples"
    assert crossed.estimate == pytest.approx(0.8) and 0.024 < crossed.half_width < 0.032
    seed_only = stats.interval([Scores(r.seed, r.value, None, None) for r in runs], "accuracy")
    assert seed_only.half_width == 0 and seed_only.method == "t over seeds (no per-example predictions)"
    assert stats.interval(runs, "accuracy") == crossed  # fixed seed: the same interval again


def test_seed_only_fallbacks_say_so() -> None:
    values = [0.70, 0.74, 0.72]
    runs = [Scores(seed, v, None, None) for seed, v in enumerate(values)]
    t = stats.interval(runs, "accuracy")
    expected = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    assert (t.low, t.high) == pytest.approx(
        expected
    ) and t.method == "t over seeds (no per-example predictions)"
    one = stats.interval(runs[:1], "accuracy")
    assert one.low is None and one.high is None and one.method.startswith("none (1 seed")
    median = stats.interval(runs, "accuracy", statistic="median")
    assert median.estimate == 0.72 and median.method.startswith("bootstrap over seeds (")
    mixed = [runs[0], Scores(5, 0.7, np.ones(10, dtype=int), np.ones(10, dtype=int))]
    assert "no per-example predictions" in stats.interval(mixed, "accuracy").method


def test_paired_test_finds_a_difference_an_unpaired_one_misses() -> None:
    """B is A with the same 16 correct examples made wrong at every seed: a consistent 2-point loss that the
    seed spread (A's seeds differ by 2 points) hides from an unpaired test but not from a paired one."""
    rng = np.random.default_rng(3)
    label = np.ones(800, dtype=int)
    a, b = [], []
    for seed, accuracy in ((1, 0.78), (2, 0.82), (3, 0.80)):
        pred_a = _correct(rng, 800, accuracy)
        pred_b = pred_a.copy()
        pred_b[np.flatnonzero(pred_a)[:16]] = 0
        a.append(Scores(seed, accuracy, pred_a, label))
        b.append(Scores(seed, accuracy - 0.02, pred_b, label))
    paired, p_paired = stats.paired_difference(a, b, "accuracy")
    assert paired.method == "paired bootstrap over seeds x test examples"
    assert paired.estimate == pytest.approx(0.02) and paired.low > 0 and p_paired < 0.01
    strip = lambda runs: [Scores(r.seed, r.value, None, None) for r in runs]  # noqa: E731
    unpaired, p_unpaired = stats.paired_difference(strip(a), strip(b), "accuracy")
    assert unpaired.method.startswith("Welch t over seeds, unpaired") and p_unpaired > 0.2
    assert unpaired.low < 0 < unpaired.high
    welch = sps.ttest_ind([r.value for r in a], [r.value for r in b], equal_var=False)
    assert p_unpaired == pytest.approx(welch.pvalue)
    same, p_same = stats.paired_difference(a, a, "accuracy")  # identical arms: exactly no difference
    assert (same.estimate, same.low, same.high, p_same) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_with_different_seeds_still_pairs_examples() -> None:
    label = np.ones(100, dtype=int)
    a = [Scores(s, 0.8, _correct(np.random.default_rng(s), 100, 0.8), label) for s in (1, 2)]
    b = [Scores(s, 0.7, _correct(np.random.default_rng(s), 100, 0.7), label) for s in (3, 4)]
    difference, p = stats.paired_difference(a, b, "accuracy")
    assert "seeds drawn per arm" in difference.method and difference.estimate == pytest.approx(0.1)
    assert 0 <= p <= 1


def test_holm_textbook_example() -> None:
    # Holm (1979) step-down: sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04,
    # made monotone -> 0.02, 0.03, 0.06, 0.06; returned in input order.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # 0.5 x 2 caps at 1; the next may not be smaller
    adjusted = stats.holm([0.01, math.nan, 0.02])  # untestable rows do not count
    assert (
        adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    )
    assert stats.holm([]) == []


def test_tie_groups() -> None:
    diff = stats.Interval(-0.02, -0.03, -0.01, "x")
    assert stats.tie_group(None, math.nan, 0.05, "accuracy") == "best"
    assert stats.tie_group(diff, 0.01, 0.05, "accuracy") == "worse"
    assert stats.tie_group(diff, 0.05, 0.05, "accuracy") == "tied"  # p >= alpha
    assert stats.tie_group(diff, 0.01, 0.05, "mse") == "better"  # lower is better
    # No test possible (one seed against seed-only results): not "tied", which would claim a test was made.
    assert stats.tie_group(diff, math.nan, 0.05, "accuracy") == "untested"


def test_pareto_probability_dominant_and_dominated() -> None:
    label = np.ones(800, dtype=int)
    rng = np.random.default_rng(0)

    def row(accuracy: float) -> list[Scores]:
        return [Scores(s, accuracy, _correct(rng, 800, accuracy), label) for s in (1, 2, 3)]

    rows, costs = [row(0.85), row(0.70), row(0.60)], [1.0, 2.0, 3.0]  # best and cheapest; worse and dearer
    probabilities, method = stats.pareto_probability(rows, costs, "accuracy")
    assert method == "bootstrap over seeds x test examples"
    assert probabilities[0] == 1.0 and probabilities[1] < 0.01 and probabilities[2] < 0.01
    assert stats.pareto_front([0.85, 0.70, 0.90], [1.0, 2.0, 3.0], "accuracy") == [True, False, True]
    seed_only = [[Scores(r.seed, r.value, None, None) for r in rows_] for rows_ in rows]
    probabilities, method = stats.pareto_probability(seed_only, costs, "accuracy")
    assert probabilities == [1.0, 0.0, 0.0] and method.startswith("bootstrap over seeds only")
    # Two overlapping rows, the cheaper one slightly worse: each is on the front in some resamples.
    close, _ = stats.pareto_probability([row(0.80), row(0.81)], [1.0, 2.0], "accuracy")
    assert close[1] < 1.0 and close[0] == 1.0  # the cheapest row is on the front whatever its score


def test_scores_of_reads_splits_and_refuses_partial_records() -> None:
    result = RunResult(
        run_id="r", task="mnli", model="m", method="lora", seed=4,
        test={"test/accuracy": 0.5, "test/accuracy_mismatched": 0.25, "test/f1_macro": float("nan")},
        predictions={
            "test": {"pred": [1, 0], "label": [1, 1]},
            "test_mismatched": {"pred": [0], "label": [1], "index": [0], "partial": True},
        },
    )  # fmt: skip
    test = stats.scores_of(result, "accuracy")
    assert (
        test.seed == 4
        and test.value == 0.5
        and test.pred.tolist() == [1, 0]
        and test.label.tolist() == [1, 1]
    )
    mismatched = stats.scores_of(result, "accuracy", "test_mismatched")
    assert mismatched.value == 0.25 and mismatched.pred is None  # partial: does not pair with full records
    assert stats.scores_of(result, "f1_macro") is None and stats.scores_of(result, "mcc") is None


def test_a_table_of_bootstraps_is_fast() -> None:
    """21 rows x 3 seeds x 800 examples, 2000 resamples: interval and paired test per row in a few seconds."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 800)
    rows = [
        [Scores(s, 0.8, np.where(rng.random(800) < 0.8, label, 1 - label), label) for s in (1, 2, 3)]
        for _ in range(21)
    ]
    start = time.perf_counter()
    for row in rows:
        stats.interval(row, "accuracy")
        stats.paired_difference(row, rows[0], "accuracy")
    assert time.perf_counter() - start < 5.0
