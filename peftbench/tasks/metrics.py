"""Task metrics: torchmetrics by name by default, any torchmetrics class by ``_target_``, or an ``evaluate`` id.

torchmetrics is the default because its metrics keep state that syncs across ranks (correct under
DDP) and need no download. A task may name an ``evaluate`` metric instead (``{evaluate: glue,
config_name: cola, key: matthews_correlation}``): it is used when ``evaluate.load`` succeeds; when
it cannot load (offline, as on the development machine) the run stops with one line. It never
falls back to a torchmetrics look-alike on its own: a benchmark must not silently change its metric.

Every metric has a direction (``higher_is_better``), as lm-evaluation-harness's metrics do: the built-ins
declare it (torchmetrics' own class attribute where the class sets one), a ``_target_`` class gives its
attribute, and a spec may state ``higher_is_better`` (an ``evaluate`` metric's default: true). The
checkpoint rule ``task.monitor_mode`` follows from the monitored metric's direction, so no task restates it.

Every metric also says what it scores. Most score predicted class ids (what the task kind's predictor returns);
ranking and calibration metrics (AUROC, average precision, calibration error, log-loss) score class
probabilities, and are wrapped in ``OnProbabilities``, which takes the head's logits and hands the metric their
softmax. Which metrics those are is the metric's own declaration (``probability_form``): the torchmetrics
families in ``PROBABILITY_FAMILIES``, or a class attribute ``peftbench_inputs`` on any other class. The wrapper
carries the marker ``needs_probabilities`` (``scores_probabilities``): the LightningModule passes the logits to
the metrics that carry it and labels to the rest, and never asks which metric it updates. Only task types whose
head gives one logit per class (``PROBABILITY_TASK_TYPES``) allow them; elsewhere they are refused when the task
config is checked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hydra.utils import get_class, instantiate
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as C
from torchmetrics import regression as R
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers.abstract import WrapperMetric

from peftbench.errors import ConfigError

Factory = Callable[[int], Metric]
NUM_LABELS = object()  # in a built-in's arguments: replaced by the task's class count
DIRECTION_KEY = "higher_is_better"  # a spec's declared direction (not passed on to the metric)
# What a probability metric is fed (a metric class may declare it as ``peftbench_inputs``): the (N, C) matrix of
# class probabilities, or class 1's probability alone (N,), the form torchmetrics' binary metrics expect.
PROBS, POSITIVE_PROB = "probs", "positive_prob"
INPUTS_ATTRIBUTE = "peftbench_inputs"
# The marker the LightningModule reads (scores_probabilities): update this metric with ``logits=`` as well.
PROBABILITIES_MARKER = "needs_probabilities"
# Task types whose predictor reads a head with one logit per class: the only ones with class probabilities
# (regression has one real-valued output, generation decodes text).
PROBABILITY_TASK_TYPES = ("classification",)


@dataclass(frozen=True)
class BuiltinMetric:
    """A metric by name: the task type it scores, how it is built, and which way is better."""

    task_type: str
    build: Factory  # num_labels -> a fresh metric
    higher_is_better: bool


def _torchmetric(
    task_type: str,
    cls: type[Metric],
    higher_is_better: bool | None = None,
    binary: type[Metric] | None = None,
    **arguments: Any,
) -> BuiltinMetric:
    """A torchmetrics class as a built-in. Its direction is the class's own ``higher_is_better``; a class that
    leaves it None (PearsonCorrCoef) needs one stated here, and a stated one may not contradict the class.
    ``binary``: the class used instead on two-class tasks (BinaryAUROC: class 1 positive, as GLUE's F1), built
    without ``arguments`` (they are the multiclass class's)."""
    directions = {c.higher_is_better for c in (cls, binary) if c is not None} - {None}
    if len(directions) > 1 or (directions and higher_is_better not in (None, *directions)):
        raise ValueError(
            f"{cls.__name__}.higher_is_better is {cls.higher_is_better}; the built-in says {higher_is_better}"
        )
    direction = next(iter(directions)) if directions else higher_is_better
    if direction is None:
        raise ValueError(f"{cls.__name__} declares no higher_is_better: state it for the built-in")

    def build(num_labels: int) -> Metric:
        if binary is not None and num_labels == 2:
            return binary()
        return cls(**{k: num_labels if v is NUM_LABELS else v for k, v in arguments.items()})

    return BuiltinMetric(task_type, build, bool(direction))


class LogLoss(Metric):
    """Mean negative log-probability of the gold class (cross-entropy; sklearn's ``log_loss``), from probabilities.

    Hand-written because torchmetrics (1.9) has no classification log-loss. For a plain cross-entropy head it
    equals the logged ``loss``, but as a named metric it can be a task's headline or monitor and sits in tables
    beside the others. Probabilities are clipped at the dtype's eps, as sklearn clips, so a confident miss
    costs -log(eps), not infinity.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    peftbench_inputs = PROBS  # the (N, C) probability matrix

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        gold = preds.gather(1, target.long().unsqueeze(1)).squeeze(1)
        eps = torch.finfo(preds.dtype).eps
        self.total += -torch.log(gold.clamp(eps, 1.0)).sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def _exact_match(num_labels: int) -> Metric:
    from peftbench.tasks.generation import ExactMatch  # generation pulls in decoding code: load lazily

    return ExactMatch()


# Classification metrics score predicted class ids (argmax), so the binary ones use class 1 as the positive
# class, as GLUE does for MRPC/QQP F1.
BUILTIN: dict[str, BuiltinMetric] = {
    "accuracy": _torchmetric("classification", C.MulticlassAccuracy, num_classes=NUM_LABELS, average="micro"),
    "f1": _torchmetric("classification", C.BinaryF1Score),
    "precision": _torchmetric("classification", C.BinaryPrecision),
    "recall": _torchmetric("classification", C.BinaryRecall),
    "f1_macro": _torchmetric("classification", C.MulticlassF1Score, num_classes=NUM_LABELS, average="macro"),
    "precision_macro": _torchmetric(
        "classification", C.MulticlassPrecision, num_classes=NUM_LABELS, average="macro"
    ),
    "recall_macro": _torchmetric(
        "classification", C.MulticlassRecall, num_classes=NUM_LABELS, average="macro"
    ),
    "mcc": _torchmetric("classification", C.MulticlassMatthewsCorrCoef, num_classes=NUM_LABELS),
    "pearson": _torchmetric(
        "regression", R.PearsonCorrCoef, higher_is_better=True
    ),  # the class leaves it None
    "spearman": _torchmetric("regression", R.SpearmanCorrCoef),
    "mse": _torchmetric("regression", R.MeanSquaredError),
    "exact_match": BuiltinMetric("generation", _exact_match, higher_is_better=True),  # = ExactMatch's own
    # Scored on class probabilities (OnProbabilities); binary tasks rank class 1's probability.
    "auroc": _torchmetric(
        "classification", C.MulticlassAUROC, binary=C.BinaryAUROC, num_classes=NUM_LABELS, average="macro"
    ),
    "average_precision": _torchmetric(
        "classification",
        C.MulticlassAveragePrecision,
        binary=C.BinaryAveragePrecision,
        num_classes=NUM_LABELS,
        average="macro",
    ),
    # Expected calibration error of the top class (Guo et al. 2017), 15 equal-width bins, on any class count.
    "calibration_error": _torchmetric(
        "classification", C.MulticlassCalibrationError, num_classes=NUM_LABELS, n_bins=15, norm="l1"
    ),
    "log_loss": _torchmetric("classification", LogLoss),
}
# torchmetrics families that score class probabilities, not class ids, by the form they take: ranking metrics
# (AUROC, average precision, the ROC and precision-recall curves: subclasses of the curve metric) and
# calibration error. Any other class declares its form as ``peftbench_inputs`` (LogLoss does).
PROBABILITY_FAMILIES: dict[type[Metric], str] = {
    C.BinaryPrecisionRecallCurve: POSITIVE_PROB,
    C.BinaryCalibrationError: POSITIVE_PROB,
    C.MulticlassPrecisionRecallCurve: PROBS,
    C.MulticlassCalibrationError: PROBS,
}
BINARY_ONLY = ("f1", "precision", "recall")


def normalise_metrics(metrics: list[str] | dict[str, Any], task_type: str, num_labels: int) -> dict[str, Any]:
    """Check the task's metrics and return them as name -> spec (None: the built-in of that name)."""
    specs: dict[str, Any] = dict.fromkeys(metrics) if isinstance(metrics, list | tuple) else dict(metrics)
    if not specs:
        raise ConfigError(f"task.metrics: empty; allowed names {', '.join(BUILTIN)}")
    for name, spec in specs.items():
        if spec is None:
            if name not in BUILTIN:
                # a list names the metrics (task.metrics=[a,b]); a mapping gives each its spec
                key = (
                    f"task.metrics={list(specs)}"
                    if isinstance(metrics, list | tuple)
                    else f"task.metrics.{name}=None"
                )
                raise ConfigError(
                    f"{key}: unknown metric {name}; allowed {', '.join(BUILTIN)}, "
                    "or name: {_target_: <torchmetrics class>} / {evaluate: <metric id>}"
                )
            applies_to = BUILTIN[name].task_type
            if applies_to != task_type:
                allowed = ", ".join(n for n, b in BUILTIN.items() if b.task_type == task_type)
                what = (
                    f"scores class probabilities, which a {task_type} task has none of"
                    if probability_form(BUILTIN[name].build(2)) is not None
                    else f"a {applies_to} metric"
                )
                raise ConfigError(f"task.metrics.{name}: {what}; task.type={task_type} allows {allowed}")
            if name in BINARY_ONLY and num_labels != 2:
                raise ConfigError(
                    f"task.metrics.{name}: binary (class 1 positive) but task has {num_labels} classes; "
                    f"use {name}_macro"
                )
        elif not isinstance(spec, dict) or ("_target_" in spec) == ("evaluate" in spec):
            raise ConfigError(
                f"task.metrics.{name}={spec!r}: allowed null (built-in), {{_target_: ...}} or {{evaluate: <id>}}"
            )
        elif not isinstance(spec.get(DIRECTION_KEY, True), bool):
            raise ConfigError(
                f"task.metrics.{name}.{DIRECTION_KEY}={spec[DIRECTION_KEY]!r}: allowed true or false"
            )
        elif "_target_" in spec:
            _check_probability_class(name, spec["_target_"], task_type, num_labels)
    return specs


def _check_probability_class(name: str, target: str, task_type: str, num_labels: int | None) -> None:
    """A ``_target_`` class that scores probabilities, refused where the task has none (or, binary, on more
    than two classes), as a built-in would be. A class that cannot be imported is left to build time."""
    try:
        form = probability_form(get_class(target))
    except ConfigError:
        raise
    except Exception:  # reported, with its reason, where it is instantiated
        return
    if form is None:
        return
    key = f"task.metrics.{name}._target_={target}"
    if task_type not in PROBABILITY_TASK_TYPES:
        raise ConfigError(
            f"{key}: scores class probabilities, which a {task_type} task has none of; allowed on "
            f"task.type={' or '.join(PROBABILITY_TASK_TYPES)} only"
        )
    if form == POSITIVE_PROB and num_labels is not None and num_labels != 2:
        raise ConfigError(
            f"{key}: ranks class 1 (binary) but the task has {num_labels} classes; use the Multiclass class "
            "or the built-in"
        )


def higher_is_better(name: str, spec: dict[str, Any] | None) -> bool:
    """The direction of one (normalised) metric: its built-in's, its class's, or its spec's (default true)."""
    if spec is None:
        return BUILTIN[name].higher_is_better
    stated = spec.get(DIRECTION_KEY)
    if "_target_" in spec:
        try:
            declared = getattr(get_class(spec["_target_"]), "higher_is_better", None)
        except Exception as error:  # unknown module or class: one line, as at build time
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"task.metrics.{name}._target_={spec['_target_']}: cannot be imported ({reason})"
            ) from None
        if declared is not None and stated is not None and stated != declared:
            raise ConfigError(
                f"task.metrics.{name}.{DIRECTION_KEY}={stated}: {spec['_target_']} declares "
                f"higher_is_better={declared}; allowed {declared}"
            )
        if declared is not None:
            return bool(declared)
    return True if stated is None else stated  # an evaluate metric, or a class that declares nothing


def monitor_mode(monitor: str, metrics: dict[str, Any]) -> Literal["max", "min"]:
    """The checkpoint rule for ``monitor`` (``val/<metric>``): max for a higher-is-better metric, min for
    ``val/loss`` and lower-is-better metrics. ``metrics`` are normalised (normalise_metrics)."""
    name = monitor.removeprefix("val/")
    if name == "loss":
        return "min"
    return "max" if higher_is_better(name, metrics[name]) else "min"


def resolve_monitor_mode(monitor: str, metrics: Any) -> str:
    """``${peftbench.monitor_mode:${task.monitor},${task.metrics}}``: the derived rule, in the composed config.

    Never raises: where the direction cannot be worked out (an unknown monitor or metric), TaskConfig
    reports the mistake with its own one-line error, and this placeholder is never used.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    try:
        if isinstance(metrics, DictConfig | ListConfig):
            metrics = OmegaConf.to_container(metrics, resolve=True)
        specs = dict.fromkeys(metrics) if isinstance(metrics, list | tuple) else dict(metrics)
        return monitor_mode(str(monitor), specs)
    except Exception:  # TaskConfig's validation names the problem
        return "max"


def build_metrics(metrics: dict[str, Any], num_labels: int) -> MetricCollection:
    """The task's metrics as one MetricCollection (cloned per split by the LightningModule); those that score
    probabilities come wrapped in OnProbabilities."""
    built: dict[str, Metric] = {}
    for name, spec in metrics.items():
        if spec is None:
            metric = BUILTIN[name].build(num_labels)
        else:
            arguments = {k: v for k, v in spec.items() if k != DIRECTION_KEY}  # the direction is ours
            if "evaluate" in arguments:
                metric = EvaluateMetric(
                    name=name, **{("metric_id" if k == "evaluate" else k): v for k, v in arguments.items()}
                )
            else:
                metric = instantiate(arguments)
        form = probability_form(metric)
        built[name] = metric if form is None else OnProbabilities(metric, form, name, num_labels)
    return MetricCollection(built)


def probability_form(metric: Metric | type) -> str | None:
    """What ``metric`` (an instance or its class) scores, by its own declaration: PROBS, POSITIVE_PROB, or None
    (predicted class ids)."""
    cls = metric if isinstance(metric, type) else type(metric)
    declared = getattr(metric, INPUTS_ATTRIBUTE, None)
    if declared is not None:
        if declared not in (PROBS, POSITIVE_PROB):
            raise ConfigError(
                f"{cls.__name__}.{INPUTS_ATTRIBUTE}={declared!r}: allowed {PROBS}, {POSITIVE_PROB}"
            )
        return declared
    return next((form for family, form in PROBABILITY_FAMILIES.items() if issubclass(cls, family)), None)


def scores_probabilities(metric: Metric) -> bool:
    """Whether ``metric`` is updated with the head's logits too (it carries PROBABILITIES_MARKER: OnProbabilities
    does); every other metric is updated with the predicted labels alone."""
    return bool(getattr(metric, PROBABILITIES_MARKER, False))


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The (N, C) class probabilities of a head's logits: their softmax, in float32 (bf16 logits lose the low
    probabilities ranking depends on). What probability metrics score and what result files store per example."""
    return logits.detach().float().softmax(dim=-1)


class OnProbabilities(WrapperMetric):
    """Feeds the wrapped metric class probabilities instead of predicted class ids.

    It carries the marker ``needs_probabilities``, so the LightningModule updates it with
    ``(predictions, gold, logits=...)`` and every unmarked metric with ``(predictions, gold)``. The logits become
    ``class_probabilities`` (softmax; for a two-class head, class 1's column is the sigmoid of the logit
    difference, what torchmetrics' binary metrics rank). State, syncing across ranks and reset stay the wrapped
    metric's; the direction (``higher_is_better``) is its too.
    """

    full_state_update = False
    needs_probabilities = True  # PROBABILITIES_MARKER

    def __init__(self, metric: Metric, form: str, name: str, num_labels: int) -> None:
        super().__init__()
        if not num_labels or num_labels < 2:
            raise ConfigError(
                f"task.metrics.{name}: scores class probabilities; needs a classification task with at least "
                f"2 classes (this one has {num_labels or 'none'})"
            )
        if form == POSITIVE_PROB and num_labels != 2:
            raise ConfigError(
                f"task.metrics.{name}: {type(metric).__name__} ranks class 1 (binary) but the task has "
                f"{num_labels} classes; use the Multiclass class or the built-in"
            )
        self.metric, self.form, self.name = metric, form, name

    @property
    def higher_is_better(self) -> bool | None:  # type: ignore[override]  # torchmetrics' constant, per instance
        return self.metric.higher_is_better

    def _inputs(self, logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            raise ValueError(
                f"metric {self.name} scores probabilities: update it with logits= (the head's outputs)"
            )
        probs = class_probabilities(logits)
        return probs[:, 1] if self.form == POSITIVE_PROB else probs

    def update(self, preds: torch.Tensor, target: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        self.metric.update(self._inputs(logits), target)

    def forward(self, preds: torch.Tensor, target: torch.Tensor, logits: torch.Tensor | None = None) -> Any:
        """The batch's value, accumulating as ``update`` does (the wrapped metric's own forward)."""
        return self.metric(self._inputs(logits), target)

    def compute(self) -> Any:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()
        super().reset()


@functools.cache
def _load_evaluate(metric_id: str, config_name: str | None) -> Any:
    import evaluate

    return evaluate.load(metric_id, config_name)


class EvaluateMetric(Metric):
    """An ``evaluate`` metric with torchmetrics state, so predictions gather across ranks before it runs."""

    full_state_update = False

    def __init__(
        self, name: str, metric_id: str, key: str | None = None, config_name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        try:
            _load_evaluate(metric_id, config_name)
        except Exception as error:  # offline, unknown id, missing script dependency: all one message
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"task.metrics.{name}.evaluate={metric_id!r}: cannot be loaded ({reason}); no substitute "
                "is used: fix access to it, or name a torchmetrics metric instead"
            ) from None
        # The loaded module lives in the cache above, not on self: metrics are deep-copied per split.
        self.metric_id, self.config_name, self.key, self.compute_kwargs = (
            metric_id,
            config_name,
            key or name,
            kwargs,
        )
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach())
        self.target.append(target.detach())

    def compute(self) -> torch.Tensor:
        module = _load_evaluate(self.metric_id, self.config_name)
        scores = module.compute(
            predictions=dim_zero_cat(self.preds).tolist(),
            references=dim_zero_cat(self.target).tolist(),
            **self.compute_kwargs,
        )
        if self.key not in scores:
            raise ConfigError(
                f"evaluate metric {self.metric_id!r} returned {sorted(scores)}; set task.metrics.<name>.key"
            )
        return torch.tensor(float(scores[self.key]))
