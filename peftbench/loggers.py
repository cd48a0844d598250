"""The run's resolved config, handed to every metric logger once: TensorBoard's and the CSV logger's
``hparams.yaml`` (and TensorBoard's HPARAMS tab), the W&B run's config.

Lightning only gives its loggers what a LightningModule saved with ``save_hyperparameters``; peftbench's module
saves none (its arguments are live objects: the model, the method, the metrics), so without this the loggers
knew nothing of the run. Keys are flattened with dots (``optimizer.lr``, ``method.peft_config.r``): the form
every logger's run table filters and groups by. The result JSON keeps its nested ``config`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf


def flat_config(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-3}}`` -> ``{"optimizer.lr": 1e-3}``; lists stay whole values.

    By hand: Lightning's flattener is private (``lightning.fabric.utilities.logger._flatten_dict``), and its
    loggers disagree on nesting (TensorBoard's tab joins keys with ``/``, CSV and W&B keep them nested)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_run_config(cfg: DictConfig, loggers: Sequence[Any]) -> None:
    """Every logger of the run gets the resolved config as its hyperparameters, once, before training.

    ``loggers`` are the trainer's (``trainer.loggers``): under ``fast_dev_run`` Lightning has swapped the
    configured ones for a stand-in that writes nothing, and the config follows that choice."""
    if not loggers:
        return
    hyperparameters = flat_config(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)
