"""Task metrics: torchmetrics by name by default, any torchmetrics class by ``_target_``, or an ``evaluate`` id.

torchmetrics is the default because its metrics keep state that syncs across ranks (correct under
DDP) and need no download. A task may name an ``evaluate`` metric instead (``{evaluate: glue,
config_name: cola, key: matthews_correlation}``): it is used when ``evaluate.load`` succeeds; when
it cannot load (offline, as on the development machine) the run stops with one line. It never
falls back to a torchmetrics look-alike on its own: a benchmark must not silently change its metric.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as C
from torchmetrics import regression as R
from torchmetrics.utilities import dim_zero_cat

from peftbench.errors import ConfigError

Factory = Callable[[int], Metric]
# name -> (task type it applies to, factory(num_labels)). Classification metrics score predicted class
# ids (argmax), so the binary ones use class 1 as the positive class, as GLUE does for MRPC/QQP F1.
BUILTIN: dict[str, tuple[str, Factory]] = {
    "accuracy": ("classification", lambda n: C.MulticlassAccuracy(num_classes=n, average="micro")),
    "f1": ("classification", lambda n: C.BinaryF1Score()),
    "precision": ("classification", lambda n: C.BinaryPrecision()),
    "recall": ("classification", lambda n: C.BinaryRecall()),
    "f1_macro": ("classification", lambda n: C.MulticlassF1Score(num_classes=n, average="macro")),
    "precision_macro": ("classification", lambda n: C.MulticlassPrecision(num_classes=n, average="macro")),
    "recall_macro": ("classification", lambda n: C.MulticlassRecall(num_classes=n, average="macro")),
    "mcc": ("classification", lambda n: C.MulticlassMatthewsCorrCoef(num_classes=n)),
    "pearson": ("regression", lambda n: R.PearsonCorrCoef()),
    "spearman": ("regression", lambda n: R.SpearmanCorrCoef()),
    "mse": ("regression", lambda n: R.MeanSquaredError()),
    "exact_match": ("generation", lambda n: _exact_match()),
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
                raise ConfigError(
                    f"task.metrics.{name}: unknown metric; allowed {', '.join(BUILTIN)}, "
                    "or name: {_target_: <torchmetrics class>} / {evaluate: <metric id>}"
                )
            applies_to = BUILTIN[name][0]
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
    return specs


def build_metrics(metrics: dict[str, Any], num_labels: int) -> MetricCollection:
    """The task's metrics as one MetricCollection (cloned per split by the LightningModule)."""
    built: dict[str, Metric] = {}
    for name, spec in metrics.items():
        if spec is None:
            built[name] = BUILTIN[name][1](num_labels)
        elif "evaluate" in spec:
            built[name] = EvaluateMetric(
                name=name, **{("metric_id" if k == "evaluate" else k): v for k, v in spec.items()}
            )
        else:
            built[name] = instantiate(spec)
    return MetricCollection(built)


def _exact_match() -> Metric:
    from peftbench.tasks.generation import ExactMatch  # generation pulls in decoding code: load lazily

    return ExactMatch()


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
