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

from peftbench.errors import ConfigError

Factory = Callable[[int], Metric]
NUM_LABELS = object()  # in a built-in's arguments: replaced by the task's class count
DIRECTION_KEY = "higher_is_better"  # a spec's declared direction (not passed on to the metric)


@dataclass(frozen=True)
class BuiltinMetric:
    """A metric by name: the task type it scores, how it is built, and which way is better."""

    task_type: str
    build: Factory  # num_labels -> a fresh metric
    higher_is_better: bool


def _torchmetric(
    task_type: str, cls: type[Metric], higher_is_better: bool | None = None, **arguments: Any
) -> BuiltinMetric:
    """A torchmetrics class as a built-in. Its direction is the class's own ``higher_is_better``; a class that
    leaves it None (PearsonCorrCoef) needs one stated here, and a stated one may not contradict the class."""
    declared = cls.higher_is_better
    if declared is not None and higher_is_better not in (None, declared):
        raise ValueError(
            f"{cls.__name__}.higher_is_better is {declared}; the built-in says {higher_is_better}"
        )
    direction = declared if declared is not None else higher_is_better
    if direction is None:
        raise ValueError(f"{cls.__name__} declares no higher_is_better: state it for the built-in")

    def build(num_labels: int) -> Metric:
        return cls(**{k: num_labels if v is NUM_LABELS else v for k, v in arguments.items()})

    return BuiltinMetric(task_type, build, bool(direction))


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
                raise ConfigError(f"task.metrics.{name}: a {applies_to} metric; task.type={task_type}")
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
    return specs


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
    """The task's metrics as one MetricCollection (cloned per split by the LightningModule)."""
    built: dict[str, Metric] = {}
    for name, spec in metrics.items():
        if spec is None:
            built[name] = BUILTIN[name].build(num_labels)
            continue
        arguments = {k: v for k, v in spec.items() if k != DIRECTION_KEY}  # the direction is ours, not theirs
        if "evaluate" in arguments:
            built[name] = EvaluateMetric(
                name=name, **{("metric_id" if k == "evaluate" else k): v for k, v in arguments.items()}
            )
        else:
            built[name] = instantiate(arguments)
    return MetricCollection(built)


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
