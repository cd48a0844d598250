"""``task.type: generation``: prompt -> answer on a decoder's own LM head, scored on decoded strings.

The machinery (prompt/answer tokenisation, collators, greedy decoding) is in ``peftbench.tasks.generation``;
this kind says when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datasets import Dataset, DatasetDict, Value
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from peftbench.errors import ConfigError
from peftbench.tasks.generation import (
    GenerationCollator,
    GenerationEvaluator,
    GenerationSpec,
    tokenize_splits,
)
from peftbench.tasks.kinds import KINDS, Collator, Predictor, TaskKind

if TYPE_CHECKING:
    from peftbench.tasks.config import TaskConfig


@KINDS.register
class Generation(TaskKind):
    peft_task_type = "CAUSAL_LM"
    causal_lm = True  # trains the pretrained LM head: no new task head
    # Carved splits are drawn at random: answers are free text.

    @property
    def auto_model_class(self) -> type:
        return AutoModelForCausalLM

    def check(self, task: TaskConfig) -> None:
        self.check_labels(task)
        GenerationSpec.from_dict(task.generation)  # the prompt, decoding and answer settings
        if task.peft_task_type != self.peft_task_type:
            raise ConfigError(
                f"task.peft_task_type={task.peft_task_type}: generation tasks train a causal LM (CAUSAL_LM)"
            )

    def check_labels(self, task: TaskConfig) -> None:
        task.num_labels = 1  # the label column holds answer text; one "output" for the results schema

    def cast_labels(self, task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
        return dataset.cast_column("label", Value("string"))  # the answer text

    def tokenize(
        self, task: TaskConfig, splits: DatasetDict, tokenizer: PreTrainedTokenizerBase
    ) -> DatasetDict:
        return tokenize_splits(splits, tokenizer, GenerationSpec.from_dict(task.generation), task.max_length)

    def collators(self, tokenizer: PreTrainedTokenizerBase) -> tuple[Collator, Collator]:
        # Training batches carry no prompt-only inputs: those are decoded from in evaluation only.
        return GenerationCollator(tokenizer, with_prompts=False), GenerationCollator(
            tokenizer, with_prompts=True
        )

    def predictor(self, task: TaskConfig | None, tokenizer: PreTrainedTokenizerBase | None) -> Predictor:
        if task is None or tokenizer is None:
            raise TypeError("a generation task's predictor decodes: it needs the task and the tokenizer")
        return GenerationEvaluator(tokenizer, GenerationSpec.from_dict(task.generation))
