"""The LearningCurve callback: what every validation during training saw, for convergence checks.

A leaderboard row whose chosen checkpoint is the last evaluation, on a curve still rising, was still
improving when its budget ran out; without the curve that cannot be told apart from a plateau. Each entry
holds the step, every ``val/`` metric, the mean training loss over the interval since the previous
validation, and the interval's non-padding tokens per second of step time (validation and checkpoint
writes excluded: the interval restarts at the first training batch after a validation).

Cheap by design: the loss and token counts accumulate on the device and are read once per validation.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from peftbench.metrics.efficiency import device_clock


class LearningCurve(L.Callback):
    """Collects ``curve``: one dict per validation run during fit (RunResult.curve)."""

    def __init__(self) -> None:
        self.curve: list[dict[str, Any]] = []
        self._reset_interval()

    def _reset_interval(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0
        self._tokens: torch.Tensor | int = 0
        self._interval_start: float | None = None
        self._interval_seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.curve = []
        self._reset_interval()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._interval_start is None:  # the first step of an interval: the clock starts here
            self._interval_start = device_clock(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum = self._loss_sum + loss.detach().float()
            self._loss_count += 1
        mask = batch.get("attention_mask")
        self._tokens = self._tokens + (mask.sum() if mask is not None else batch["input_ids"].numel())

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._interval_start is not None:
            self._interval_seconds = device_clock(trainer) - self._interval_start

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        entry: dict[str, Any] = {"step": int(trainer.global_step)}
        for name, value in sorted(trainer.callback_metrics.items()):
            if name.startswith("val/"):
                entry[name] = float(value)
        entry["train/loss"] = float(self._loss_sum / self._loss_count) if self._loss_count else None
        tokens = float(self._tokens)
        entry["train_tokens_per_s"] = tokens / self._interval_seconds if self._interval_seconds > 0 else None
        self.curve.append(entry)
        self._reset_interval()

    def report(self, result: Any) -> None:
        """The ``curve`` section of the result (results.Reporter)."""
        result.curve = list(self.curve)
