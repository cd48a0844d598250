"""Metrics scored on class probabilities (issue 18): AUROC, average precision, calibration error and log-loss get
the head's probabilities, the other metrics keep getting predicted labels, and task types without class
probabilities (generation, regression) refuse them before anything loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from torchmetrics import Metric

from peftbench.errors import ConfigError
from peftbench.models.module import update_metrics
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.metrics import (
    BUILTIN,
    build_metrics,
    monitor_mode,
    normalise_metrics,
    scores_probabilities,
)
from peftbench.train import run

PROBABILITY_METRICS = ["auroc", "average_precision", "calibration_error", "log_loss"]


def _collection(names: list[str], num_labels: int = 2):
    return build_metrics(normalise_metrics(names, "classification", num_labels), num_labels)


def _scores(names: list[str], probs: list[list[float]], target: list[int]) -> dict[str, float]:
    """``names`` updated the way the LightningModule updates them: argmax labels, and the logits."""
    logits = torch.tensor(probs).log()  # softmax(log p) = p: the metrics see exactly these probabilities
    metrics = _collection(names, len(probs[0]))
    update_metrics(metrics, logits.argmax(-1), torch.tensor(target), logits)
    return {k: float(v) for k, v in metrics.compute().items()}


# --- values against hand computations ------------------------------------------------------------------------
def test_auroc_of_perfect_reversed_and_tied_rankings() -> None:
    target = [0, 0, 1, 1]
    perfect = [[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]]
    assert _scores(["auroc"], perfect, target)["auroc"] == pytest.approx(1.0)
    assert _scores(["auroc"], perfect, [1, 1, 0, 0])["auroc"] == pytest.approx(0.0)
    assert _scores(["auroc"], [[0.5, 0.5]] * 4, target)["auroc"] == pytest.approx(0.5)


def test_auroc_is_the_share_of_correctly_ranked_pairs() -> None:
    # Positive-class probabilities 0.8, 0.4 (positives) and 0.6, 0.2 (negatives): of the 4 pairs, 0.4 < 0.6 is
    # the one ranked wrong, so AUROC = 3/4. Average precision: at 0.8 precision 1 (recall 1/2), at 0.4
    # precision 2/3 (recall 1): AP = 1/2 x 1 + 1/2 x 2/3 = 5/6.
    probs = [[0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2]]
    scores = _scores(["auroc", "average_precision"], probs, [1, 0, 1, 0])
    assert scores == pytest.approx({"auroc": 0.75, "average_precision": 5 / 6})


def test_multiclass_auroc_is_the_macro_one_vs_rest_mean() -> None:
    # Class 0 and class 1 are ranked perfectly one-vs-rest; class 2's probabilities rank its one example
    # below one of the others (0.25 < 0.3): 1 of its 2 pairs wrong, AUROC 1/2.
    probs = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.35, 0.4, 0.25]]
    scores = _scores(["auroc"], probs, [0, 1, 2])
    assert scores["auroc"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_log_loss_is_the_mean_negative_log_probability_of_the_gold_class() -> None:
    probs = [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]
    expected = -(math.log(0.9) + math.log(0.7) + math.log(0.4)) / 3
    assert _scores(["log_loss"], probs, [0, 1, 1])["log_loss"] == pytest.approx(expected, abs=1e-6)
    # A confident miss costs -log(eps) of float32 (clipped as sklearn clips), not infinity.
    miss = _scores(["log_loss"], [[1.0, 0.0]], [1])["log_loss"]
    assert miss == pytest.approx(-math.log(torch.finfo(torch.float32).eps), rel=1e-4)


def test_calibration_error_compares_confidence_with_accuracy() -> None:
    # Every top-class confidence is 0.8 (one bin): 4 of 5 right -> calibrated (0); 5 of 5 right -> 0.2.
    probs = [[0.8, 0.2]] * 5
    assert _scores(["calibration_error"], probs, [0, 0, 0, 0, 1])["calibration_error"] == pytest.approx(0.0)
    assert _scores(["calibration_error"], probs, [0] * 5)["calibration_error"] == pytest.approx(0.2)


def test_probability_metrics_keep_their_direction() -> None:
    metrics = _collection(PROBABILITY_METRICS)
    directions = {name: metric.higher_is_better for name, metric in metrics.items()}
    assert directions == {name: BUILTIN[name].higher_is_better for name in PROBABILITY_METRICS}
    assert directions["auroc"] and not directions["log_loss"] and not directions["calibration_error"]
    assert monitor_mode("val/log_loss", dict.fromkeys(PROBABILITY_METRICS)) == "min"


# --- which metrics get what ----------------------------------------------------------------------------------
def test_only_probability_metrics_say_they_score_probabilities() -> None:
    metrics = _collection(["accuracy", "f1", "mcc", *PROBABILITY_METRICS])
    marked = {name for name, metric in metrics.items() if scores_probabilities(metric)}
    assert marked == set(PROBABILITY_METRICS)


class _Spy(Metric):
    """A label metric whose update takes anything: it must still be handed only labels."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("seen", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.calls: list[tuple] = []

    def update(self, preds: torch.Tensor, target: torch.Tensor, **kwargs) -> None:
        self.calls.append((preds.clone(), target.clone(), sorted(kwargs)))
        self.seen += preds.numel()

    def compute(self) -> torch.Tensor:
        return self.seen


def test_label_metrics_are_unchanged_beside_probability_metrics() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 3, generator=generator)
    gold = torch.randint(0, 3, (32,), generator=generator)
    labels_only = _collection(["accuracy", "f1_macro", "mcc"], 3)
    labels_only.update(logits.argmax(-1), gold)  # what every label metric was fed before
    expected = {k: float(v) for k, v in labels_only.compute().items()}
    assert 0 < expected["accuracy"] < 1

    mixed = _collection(["accuracy", "f1_macro", "mcc", "auroc", "log_loss"], 3)
    update_metrics(mixed, logits.argmax(-1), gold, logits)
    scores = {k: float(v) for k, v in mixed.compute().items()}
    assert {k: scores[k] for k in expected} == expected
    assert 0 <= scores["auroc"] <= 1 and scores["log_loss"] > 0

    spy = build_metrics({"spy": {"_target_": f"{__name__}._Spy"}, "auroc": None}, 3)
    update_metrics(spy, logits.argmax(-1), gold, logits)
    ((preds, target, extra),) = spy["spy"].calls
    assert torch.equal(preds, logits.argmax(-1)) and torch.equal(target, gold) and extra == []


def test_a_probability_metric_without_logits_says_what_it_needs() -> None:
    metrics = _collection(["accuracy", "auroc"])
    with pytest.raises(ValueError, match="metric auroc scores probabilities: update it with logits="):
        update_metrics(metrics, torch.tensor([0, 1]), torch.tensor([0, 1]), None)


# --- refused where there are no class probabilities ----------------------------------------------------------
def _refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        TaskConfig.from_cfg(compose_config(overrides).task)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_probability_metric_on_a_generation_task_is_refused_with_one_line() -> None:
    message = _refusal("task=arith", "model=tiny-llama", "task.metrics=[exact_match,auroc]")
    assert message.startswith("task.metrics.auroc: ")
    assert "class probabilities" in message and "task.type=generation allows exact_match" in message


def test_a_probability_metric_on_a_regression_task_is_refused_with_one_line() -> None:
    message = _refusal("task=stsb", "task.metrics=[pearson,spearman,log_loss]")
    assert message.startswith("task.metrics.log_loss: ") and "class probabilities" in message
    assert "task.type=regression allows pearson, spearman, mse" in message


def test_a_probability_class_by_target_is_refused_where_there_are_no_probabilities() -> None:
    spec = {"roc": {"_target_": "torchmetrics.classification.BinaryAUROC"}}
    with pytest.raises(ConfigError) as error:
        normalise_metrics(spec, "generation", 1)
    message = str(error.value)
    assert message.startswith("task.metrics.roc._target_=torchmetrics.classification.BinaryAUROC: ")
    assert "class probabilities" in message and "\n" not in message
    assert normalise_metrics(spec, "classification", 2) == spec  # where the head has classes it is fine


def test_a_binary_probability_class_is_refused_on_three_classes() -> None:
    spec = {"roc": {"_target_": "torchmetrics.classification.BinaryAUROC"}}
    with pytest.raises(ConfigError, match=r"^task.metrics.roc._target_=.*BinaryAUROC: .*3 classes"):
        normalise_metrics(spec, "classification", 3)


# --- a tiny run, end to end ----------------------------------------------------------------------------------
def test_a_tiny_run_records_probability_metrics_and_probabilities(make_cfg, tmp_path) -> None:
    common = ("method=lora", "task.max_steps=6", "task.val_every_n_steps=3")
    metrics = "task.metrics=[accuracy,auroc,average_precision,calibration_error,log_loss]"
    result = run(make_cfg(*common, metrics))
    assert result.status == "ok", result.error
    stored = json.loads(Path(result.provenance["result_path"]).read_text())
    test = stored["test"]
    for name in ("auroc", "average_precision", "calibration_error"):
        assert math.isfinite(test[f"test/{name}"]) and 0 <= test[f"test/{name}"] <= 1, name
    assert math.isfinite(test["test/log_loss"]) and test["test/log_loss"] > 0
    assert all("val/auroc" in entry and "val/log_loss" in entry for entry in stored["curve"])

    # Per example: the class probabilities beside pred and label, enough to recompute (and bootstrap) AUROC.
    record = stored["predictions"]["test"]
    assert set(record) == {"pred", "label", "prob"}
    probs = torch.tensor(record["prob"])
    assert probs.shape == (len(record["label"]), 2)
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-6)
    assert record["pred"] == probs.argmax(-1).tolist()
    rescored = _collection(["auroc", "log_loss"])
    update_metrics(rescored, probs.argmax(-1), torch.tensor(record["label"]), probs.log())
    assert float(rescored["auroc"].compute()) == pytest.approx(test["test/auroc"], abs=1e-6)
    assert float(rescored["log_loss"].compute()) == pytest.approx(test["test/log_loss"], abs=1e-5)

    # The label metric is what it is without the probability metrics beside it: same run, same accuracy.
    plain = run(compose_config([*common, "task.metrics=[accuracy]"], tmp_path / "plain"))
    assert plain.test["test/accuracy"] == result.test["test/accuracy"]
    assert set(plain.predictions["test"]) == {"pred", "label"}, "no probabilities stored when none are scored"
