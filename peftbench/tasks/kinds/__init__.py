"""Task kinds: everything that varies with ``task.type``, in one object per type.

A task type decides how a task's labels are checked and cast, how rows are tokenised and batched,
which transformers head the backbone loads, which peft task type wraps it, how predictions are read
off a forward pass, and whether the carved splits are stratified. Callers ask the task's kind
(``task.kind``) instead of branching on ``task.type``, so a new type is one module here, its
metrics in ``peftbench.tasks.metrics.BUILTIN``, a task YAML and its docs.

Kinds register with ``@KINDS.register`` and are keyed by their module's file name, as methods are:
``kinds/regression.py`` *is* ``task.type: regression``. The base class holds the behaviour of a
sequence-level head (classification and regression share it); a kind overrides what differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from peftbench.errors import ConfigError
from peftbench.registry import Registry, RegistryError

if TYPE_CHECKING:
    from peftbench.models.backbone import ModelConfig
    from peftbench.tasks.config import TaskConfig

Collator = Any  # a DataLoader collate_fn: list of rows -> batch dict


class Predictor(Protocol):
    """Reads an evaluation batch's predictions and gold values, in the form the task's metrics update on."""

    def __call__(self, model: nn.Module, batch: dict[str, Any], output: Any) -> tuple[Any, Any]: ...


class TaskKind:
    """One task type's behaviour. The defaults are a sequence-level head over tokenised text."""

    peft_task_type: ClassVar[str] = "SEQ_CLS"  # the peft TaskType that wraps this kind's model
    # The kind trains through the backbone's own causal-LM head: it needs a decoder (model.causal_lm) and
    # adds no new task head (model.head_modules stay frozen and unsaved).
    causal_lm: ClassVar[bool] = False
    problem_type: ClassVar[str | None] = None  # transformers' config.problem_type (the loss of the head)
    stratify_column: ClassVar[str | None] = None  # carved splits keep this column's proportions

    @property
    def name(self) -> str:
        """The ``task.type`` value: the module's file name."""
        return type(self).__module__.rsplit(".", 1)[-1]

    @property
    def auto_model_class(self) -> type:
        """The transformers auto class the backbone loads with (it builds the head)."""
        return AutoModelForSequenceClassification

    # --- config: checked before any data or model loads ----------------------------------------------
    def check(self, task: TaskConfig) -> None:
        """Type-specific checks; sets ``task.num_labels``. A bad value raises a one-line ConfigError."""
        self.check_labels(task)
        if task.peft_task_type != self.peft_task_type:
            raise ConfigError(
                f"task.peft_task_type={task.peft_task_type}: a {self.name} task's model is wrapped as "
                f"{self.peft_task_type}"
            )
        if task.generation is not None:
            raise ConfigError(
                f"task.generation: set, but task.type={self.name} (only generation tasks use it)"
            )

    def infer_labels(self, task: TaskConfig) -> dict[str, Any] | None:
        """Label settings read from the data when the config leaves them open (None: nothing to infer)."""
        return None

    def check_labels(self, task: TaskConfig) -> None:
        """Validate the label settings and set ``task.num_labels`` (the head's output count)."""
        raise NotImplementedError

    def check_model(self, model_cfg: ModelConfig) -> None:
        """Refuse a backbone this kind cannot train (called with the method's context, before weights load)."""
        if self.causal_lm and not model_cfg.causal_lm:
            raise ConfigError(
                f"task.type={self.name}: model {model_cfg.name} is not a decoder (model.causal_lm=false)"
            )

    def head_modules(self, model_head_modules: list[str]) -> list[str]:
        """The modules that train as the task head: the model's new head, or none for a causal-LM kind."""
        return [] if self.causal_lm else list(model_head_modules)

    # --- data ------------------------------------------------------------------------------------------
    def check_splits(self, task: TaskConfig, splits: DatasetDict) -> None:
        """What the prepared splits must hold for this kind to train (called once they are carved)."""
        if len(splits["train"]) == 0:
            raise ConfigError(
                f"task.splits.train={task.splits.get('train', 'train')}: the train split has no rows"
            )

    def cast_labels(self, task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
        """The canonical ``label`` column (already selected and renamed) in this kind's type."""
        raise NotImplementedError

    def tokenize(
        self, task: TaskConfig, splits: DatasetDict, tokenizer: PreTrainedTokenizerBase
    ) -> DatasetDict:
        """Token ids and ``labels`` per split; the datamodule adds the evaluation rows' positions."""
        from peftbench.tasks.datamodule import tokenize_batch  # the datamodule imports kinds: load lazily

        return splits.map(
            tokenize_batch,
            batched=True,
            fn_kwargs={
                "tokenizer": tokenizer,
                "max_length": task.max_length,
                "truncation": task.truncation,
                "head_fraction": task.head_fraction,
                "pair": bool(task.text_pair_column),
            },
            remove_columns=[c for c in splits["train"].column_names if c != "label"],
            desc=f"tokenizing {task.name}",
        ).rename_column("label", "labels")

    def collators(self, tokenizer: PreTrainedTokenizerBase) -> tuple[Collator, Collator]:
        """(training, evaluation) collators. Dynamic padding: each batch pads to its own longest row."""
        collator = DataCollatorWithPadding(tokenizer)
        return collator, collator

    # --- evaluation ------------------------------------------------------------------------------------
    def predictor(self, task: TaskConfig | None, tokenizer: PreTrainedTokenizerBase | None) -> Predictor:
        """What the LightningModule calls in evaluation steps; logits-reading kinds need neither argument."""
        raise NotImplementedError


class LogitsPredictor:
    """Predictions from the head's logits, gold from the batch's ``labels``."""

    def __init__(self, read: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.read = read  # logits -> predictions

    def __call__(
        self, model: nn.Module, batch: dict[str, Any], output: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.read(output.logits), batch["labels"]


KINDS: Registry[TaskKind] = Registry("task type", __name__)


@functools.cache
def task_kind(name: str) -> TaskKind:
    """The kind registered for ``task.type=name`` (kinds hold no state: one instance each)."""
    try:
        return KINDS.get(name)()
    except RegistryError:
        raise ConfigError(f"task.type={name}: allowed {', '.join(KINDS.names())}") from None
