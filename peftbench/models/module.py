"""The one LightningModule every method trains through.

It knows a model, a list of hook providers (the method, then any regularizer) and the task's
metrics; it never asks which method it runs. What differs between methods happens in
``Method.apply`` before this module exists, and in the hooks it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from transformers import get_scheduler

from peftbench.methods.base import Method, TrainingHooks
from peftbench.tasks.generation import GENERATE_KEY

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class PeftBenchModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        method: Method,
        metrics: MetricCollection,
        optimizer_factory: OptimizerFactory,
        weight_decay: float,
        scheduler: dict[str, Any],
        regularizers: Sequence[TrainingHooks] = (),
        task_type: str = "classification",
        test_postfixes: Sequence[str] = ("",),
        generator: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.hooks: list[TrainingHooks] = [method, *regularizers]
        self.optimizer_factory = optimizer_factory
        self.weight_decay = weight_decay
        self.scheduler_cfg = scheduler
        self.task_type = task_type
        # Generation tasks: a GenerationEvaluator (tasks/generation.py) decodes prompts in eval steps.
        self.generator = generator
        self.val_metrics = metrics.clone(prefix="val/")
        # One collection per reported split: test/<metric> and e.g. test/<metric>_mismatched (MNLI).
        self.test_postfixes = list(test_postfixes)
        self.test_metrics = nn.ModuleList(
            [metrics.clone(prefix="test/", postfix=p) for p in self.test_postfixes]
        )
        # Checkpoints hold only trainable weights (see on_save_checkpoint); loading them back is partial.
        self.strict_loading = False

    # --- steps ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        # Eval batches of generation tasks also carry prompt-only inputs under one extra key.
        return self.model(**{k: v for k, v in batch.items() if k != GENERATE_KEY})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True)
        for hook in self.hooks:
            extra = hook.extra_loss(self.model)
            if extra is not None:
                self.log(f"train/extra_loss_{type(hook).__name__}", extra)
                loss = loss + extra
        return loss

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1).float() if self.task_type == "regression" else logits.argmax(dim=-1)

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics: MetricCollection, name: str) -> None:
        output = self(batch)
        if self.generator is not None:  # generation: greedy answers from the prompts, scored as strings
            prompts = batch[GENERATE_KEY]
            metrics.update(self.generator.predict(self.model, prompts), prompts["answers"])
        else:
            metrics.update(self._predictions(output.logits), batch["labels"])
        batch_size = batch["labels"].shape[0]
        self.log(name, output.loss, batch_size=batch_size, sync_dist=True, add_dataloader_idx=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val/loss")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        postfix = self.test_postfixes[dataloader_idx]
        self._eval_step(batch, self.test_metrics[dataloader_idx], f"test/loss{postfix}")

    def on_validation_epoch_end(self) -> None:
        # torchmetrics syncs states across ranks in compute(), so values are correct under DDP.
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        for metrics in self.test_metrics:
            self.log_dict(metrics.compute())
            metrics.reset()

    # --- optimisation --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            for hook in self.hooks:
                hook.setup(self.model)

    def on_train_start(self) -> None:
        # from_pretrained returns models in eval mode and Lightning keeps submodule modes as found:
        # without this, pretrained backbones would train with dropout off.
        self.model.train()

    def configure_callbacks(self) -> list[L.Callback]:
        return [callback for hook in self.hooks for callback in hook.callbacks()]

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.method.parameter_groups(self.model, self.weight_decay)
        optimizer_class = self.method.optimizer_class()
        if optimizer_class is None:
            optimizer = self.optimizer_factory(groups)
        else:  # the method's class, with the configured hyperparameters (lr, betas, ...)
            optimizer = optimizer_class(groups, **getattr(self.optimizer_factory, "keywords", {}))
        total_steps = int(self.trainer.estimated_stepping_batches)
        warmup_steps = round(self.scheduler_cfg.get("warmup_ratio", 0.0) * total_steps)
        scheduler = get_scheduler(
            self.scheduler_cfg.get("name", "linear"),
            optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen weights equal the pretrained ones: storing them would make every checkpoint a full model.
        trainable = {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}
        buffers = {f"model.{name}" for name, _ in self.model.named_buffers()}
        checkpoint["state_dict"] = {
            key: value for key, value in checkpoint["state_dict"].items() if key in trainable | buffers
        }
