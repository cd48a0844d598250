"""``task.type: regression``: one real-valued output per input (MSE loss), predictions as floats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from datasets import Dataset, Value
from transformers import PreTrainedTokenizerBase

from peftbench.errors import ConfigError
from peftbench.tasks.kinds import KINDS, LogitsPredictor, Predictor, TaskKind

if TYPE_CHECKING:
    from peftbench.tasks.config import TaskConfig


@KINDS.register
class Regression(TaskKind):
    problem_type = "regression"  # transformers' sequence-classification head then trains with MSE
    # Carved splits are drawn at random: continuous labels have no classes to stratify by.

    def check_labels(self, task: TaskConfig) -> None:
        if task.num_labels not in (None, 1):
            raise ConfigError(f"task.num_labels={task.num_labels}: a regression task has 1 output")
        task.num_labels = 1

    def cast_labels(self, task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
        return dataset.cast_column("label", Value("float32"))

    def predictor(self, task: TaskConfig | None, tokenizer: PreTrainedTokenizerBase | None) -> Predictor:
        return LogitsPredictor(_scalar)


def _scalar(logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1).float()  # one output per row; float32 whatever the autocast dtype
