"""Which checkpoint the test used, reported by the checkpoint callback itself.

``SelectedCheckpoint`` is Lightning's ModelCheckpoint (every knob as documented there) that also remembers
the step of the best validation it kept, so the result can say which checkpoint was tested and whether it
was the last evaluation, without parsing file names.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class SelectedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint plus the ``selection`` and ``val_best`` sections of the result (results.Reporter)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path, score = self.best_model_path, self.best_model_score
        super().on_validation_end(trainer, pl_module)  # saves when the monitor strictly improved
        improved = self.best_model_path != path or (
            self.best_model_score is not None and (score is None or bool(self.best_model_score != score))
        )
        if improved and self.best_model_path:
            self.best_step = int(trainer.global_step)

    def report(self, result: Any) -> None:
        best = self.best_model_path or None
        result.selection.update(
            {
                "monitor": self.monitor,
                "mode": self.mode,
                "best_checkpoint": best,
                "chosen": "best" if best else "last",
                "best_step": self.best_step if best else None,
            }
        )
        if self.best_model_score is not None:
            result.val_best = {str(self.monitor): float(self.best_model_score)}
