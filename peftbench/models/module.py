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

from peftbench.methods._common import in_modules
from peftbench.methods.base import LR_SCALE, Method, TrainingHooks
from peftbench.tasks.datamodule import EXAMPLE_INDEX_KEY
from peftbench.tasks.generation import GENERATE_KEY
from peftbench.tasks.kinds import Predictor, task_kind
from peftbench.tasks.metrics import class_probabilities, scores_probabilities

# Batch entries that are not model inputs: prompts to decode (generation tasks) and rows' split positions.
NON_INPUT_KEYS = (GENERATE_KEY, EXAMPLE_INDEX_KEY)

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
        predictor: Predictor | None = None,
        head_lr: float | None = None,
        head_modules: Sequence[str] = (),
    ) -> None:
        """``predictor`` (``task.kind.predictor(task, tokenizer)``) reads an eval batch's predictions and gold
        values. Without it: ``generator`` (a generation task's GenerationEvaluator), else the logits reading of
        ``task_type``'s kind. ``head_lr`` (``optimizer.head_lr``): the learning rate of the parameters of
        ``head_modules`` (the task head) whatever the method's groups say; None: the head follows them."""
        super().__init__()
        self.model = model
        self.method = method
        self.hooks: list[TrainingHooks] = [method, *regularizers]
        self.optimizer_factory = optimizer_factory
        self.weight_decay = weight_decay
        self.head_lr = head_lr
        self.head_modules = list(head_modules)
        self.scheduler_cfg = scheduler
        self.task_type = task_type
        if predictor is None:
            predictor = generator if generator is not None else task_kind(task_type).predictor(None, None)
        # The one thing evaluation asks of the task kind: argmax class ids, scalar scores, or (generation tasks)
        # answers decoded from the prompts by a GenerationEvaluator (tasks/generation.py).
        self.predictor = predictor
        # Metrics marked as scoring probabilities (AUROC, log-loss: tasks/metrics.py) are also handed the head's
        # logits; asked once of the metrics themselves, never of their names.
        self.passes_logits = any(scores_probabilities(m) for m in metrics.values(copy_state=False))
        self.val_metrics = metrics.clone(prefix="val/")
        # One collection per reported split: test/<metric> and e.g. test/<metric>_mismatched (MNLI).
        self.test_postfixes = list(test_postfixes)
        self.test_metrics = nn.ModuleList(
            [metrics.clone(prefix="test/", postfix=p) for p in self.test_postfixes]
        )
        # Checkpoints hold only trainable weights (see on_save_checkpoint); loading them back is partial.
        self.strict_loading = False
        # Per-example predictions of the last test pass, per reported split ("test", "test_mismatched"): what
        # paired comparisons between runs need (results.RunResult.predictions). With probability metrics, each
        # example's class probabilities too (``prob``), so those metrics can be recomputed and resampled later.
        self.test_predictions: dict[str, dict[str, list]] = {}
        self._collected: list[dict[str, list]] = []

    # --- steps ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        # Eval batches of generation tasks also carry prompt-only inputs under one extra key.
        return self.model(**{k: v for k, v in batch.items() if k not in NON_INPUT_KEYS})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True)
        for hook in self.hooks:
            extra = hook.extra_loss(self.model)
            if extra is not None:
                self.log(f"train/extra_loss_{type(hook).__name__}", extra)
                loss = loss + extra
        return loss

    def _eval_step(
        self,
        batch: dict[str, torch.Tensor],
        metrics: MetricCollection,
        name: str,
        collect: dict[str, list] | None = None,
    ) -> None:
        output = self(batch)
        predicted, gold = self.predictor(self.model, batch, output)
        logits = output.logits if self.passes_logits else None
        update_metrics(metrics, predicted, gold, logits)
        if collect is not None and EXAMPLE_INDEX_KEY in batch:
            collect["index"].extend(batch[EXAMPLE_INDEX_KEY].tolist())
            for key, values in (("pred", predicted), ("label", gold)):
                collect[key].extend(values.tolist() if isinstance(values, torch.Tensor) else list(values))
            if logits is not None:
                collect["prob"].extend(_stored_probabilities(logits))
        batch_size = batch["labels"].shape[0]
        self.log(name, output.loss, batch_size=batch_size, sync_dist=True, add_dataloader_idx=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val/loss")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        postfix = self.test_postfixes[dataloader_idx]
        collect = self._collected[dataloader_idx] if dataloader_idx < len(self._collected) else None
        self._eval_step(batch, self.test_metrics[dataloader_idx], f"test/loss{postfix}", collect)

    def on_validation_epoch_end(self) -> None:
        # torchmetrics syncs states across ranks in compute(), so values are correct under DDP.
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        columns = ["index", "pred", "label", *(["prob"] if self.passes_logits else [])]
        self._collected = [{key: [] for key in columns} for _ in self.test_postfixes]

    def on_test_epoch_end(self) -> None:
        for metrics in self.test_metrics:
            self.log_dict(metrics.compute())
            metrics.reset()
        self.test_predictions = {
            f"test{postfix}": _in_split_order(self._gather(collected))
            for postfix, collected in zip(self.test_postfixes, self._collected, strict=True)
            if collected["index"]
        }
        self._collected = []

    def _gather(self, collected: dict[str, list]) -> dict[str, list]:
        """Every rank's rows (DDP shards the test split); identity on one device."""
        if self.trainer.world_size <= 1:
            return collected
        import torch.distributed as dist

        shards: list[dict[str, list] | None] = [None] * self.trainer.world_size
        dist.all_gather_object(shards, collected)
        return {key: [v for shard in shards if shard for v in shard[key]] for key in collected}

    # --- optimisation --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            for hook in self.hooks:
                hook.setup(self.model)

    def on_train_start(self) -> None:
        # from_pretrained returns models in eval mode and Lightning keeps submodule modes as found:
        # without this, pretrained backbones would train with dropout off.
        self.model.train()

    # --- what the measurement callbacks ask (they see this module, never the method) -------------------
    def trainable_parameter_count(self) -> int:
        """Parameters the method trains, as it counts them (a sparse mask counts only its free entries)."""
        return self.method.trainable_parameter_count(self.model)

    def extra_processed_tokens(self) -> int:
        """Tokens the method adds to every input that every layer processes (soft prompts)."""
        return int(self.method.extra_processed_tokens())

    def configure_callbacks(self) -> list[L.Callback]:
        return [callback for hook in self.hooks for callback in hook.callbacks()]

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.method.parameter_groups(self.model, self.weight_decay)
        if self.head_lr is not None:
            groups = head_groups_apart(groups, self.model, self.head_modules, self.head_lr)
        optimizer_class = self.method.optimizer_class()
        if optimizer_class is None:
            optimizer = self.optimizer_factory(groups)
        else:  # the method's class, with the configured hyperparameters (lr, betas, ...)
            optimizer = optimizer_class(groups, **getattr(self.optimizer_factory, "keywords", {}))
        # A group may ask for an lr relative to the configured one (LR_SCALE: LoRA+'s B factors).
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.pop(LR_SCALE, 1.0)
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


def head_groups_apart(
    groups: list[dict[str, Any]], model: nn.Module, head_modules: Sequence[str], head_lr: float
) -> list[dict[str, Any]]:
    """Each parameter group split in two, the task head's part at ``head_lr`` (an absolute lr, so a method's
    ``LR_SCALE`` never reaches the head). Entries listed per parameter (LoRA-FA's names and scaling factors)
    split with their parameters; the other settings (weight decay) stay with both halves."""
    names = {id(p): n for n, p in model.named_parameters()}
    split: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        per_param = [
            k for k, v in group.items() if k != "params" and isinstance(v, list) and len(v) == len(params)
        ]
        is_head = [in_modules(names.get(id(p), ""), head_modules) for p in params]
        for head in (False, True):
            keep = [i for i, flag in enumerate(is_head) if flag == head]
            if not keep:
                continue
            part = {k: v for k, v in group.items() if k not in per_param}
            part["params"] = [params[i] for i in keep]
            part.update({k: [group[k][i] for i in keep] for k in per_param})
            if head:
                part.pop(LR_SCALE, None)
                part["lr"] = head_lr
            split.append(part)
    return split


def update_metrics(
    metrics: MetricCollection, predicted: Any, gold: Any, logits: torch.Tensor | None = None
) -> None:
    """Each metric updated with what it scores: those marked as scoring probabilities (``scores_probabilities``)
    with ``logits=`` as well, every other one with the predictions and gold alone, whatever its ``update``
    accepts. Without probability metrics (``logits`` None) the collection updates as one, torchmetrics' compute
    groups included; with them each metric updates on its own (the wrapper asks for logits it was not given)."""
    if logits is None:
        metrics.update(predicted, gold)
        return
    for metric in metrics.values(copy_state=False):
        if scores_probabilities(metric):
            metric.update(predicted, gold, logits=logits)
        else:
            metric.update(predicted, gold)


def _stored_probabilities(logits: torch.Tensor) -> list[list[float]]:
    """Per example, its class probabilities as the metrics saw them, at 9 significant digits: every float32
    written back exactly (ties and ranks kept), in about half the text of a full float repr."""
    return [[float(f"{p:.9g}") for p in row] for row in class_probabilities(logits).tolist()]


def _in_split_order(collected: dict[str, list]) -> dict[str, list]:
    """Rows sorted back into split order (eval loaders draw them longest first), each once (a distributed
    sampler repeats rows to even out shards). ``index`` is kept only when rows are missing (limit_test_batches),
    so a complete record is just ``pred`` and ``label`` (and ``prob``, when collected) aligned with the split."""
    columns = [key for key in collected if key != "index"]
    values = zip(*(collected[key] for key in columns), strict=True)
    rows = dict(zip(collected["index"], values, strict=True))
    order = sorted(rows)
    record = {key: [rows[i][n] for i in order] for n, key in enumerate(columns)}
    if order != list(range(len(order))):
        record["index"] = order
    return record
