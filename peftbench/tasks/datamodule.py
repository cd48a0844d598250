"""Tokenised train/validation/test loaders with dynamic padding (one DataModule for every task)."""

from __future__ import annotations

import lightning as L
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from peftbench.tasks.config import TaskConfig
from peftbench.tasks.sources import load_source, prepare_splits


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task: TaskConfig, tokenizer: PreTrainedTokenizerBase, num_workers: int = 0) -> None:
        super().__init__()
        self.task = task
        self.tokenizer = tokenizer
        self.num_workers = num_workers
        self.datasets: DatasetDict | None = None
        # Dynamic padding: each batch pads to its own longest sequence, not to max_length.
        self.collator = DataCollatorWithPadding(tokenizer)
        self.train_collator = self.collator  # generation tasks train without the eval-only prompt inputs

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:  # Lightning calls setup for fit and again for test
            return
        splits = prepare_splits(self.task, load_source(self.task))
        if self.task.type == "generation":  # prompt -> answer on decoders: its own tokenisation and collator
            from peftbench.tasks.generation import GenerationCollator, GenerationSpec, tokenize_splits

            spec = GenerationSpec.from_dict(self.task.generation)
            self.datasets = tokenize_splits(splits, self.tokenizer, spec, self.task.max_length)
            self.collator = GenerationCollator(self.tokenizer, with_prompts=True)
            self.train_collator = GenerationCollator(self.tokenizer, with_prompts=False)
            return
        # datasets fingerprints the map, so a re-run with the same tokenizer and max_length hits the cache.
        self.datasets = splits.map(
            self._tokenize,
            batched=True,
            remove_columns=[c for c in splits["train"].column_names if c != "label"],
            desc=f"tokenizing {self.task.name}",
        ).rename_column("label", "labels")

    def _tokenize(self, batch: dict) -> dict:
        pair = batch.get("text_pair") if self.task.text_pair_column else None
        return self.tokenizer(batch["text"], pair, truncation=True, max_length=self.task.max_length)

    def split_sizes(self) -> dict[str, int]:
        assert self.datasets is not None, "call setup() first"
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if self.task.group_by_length:
            # Batches of similar length waste less compute on padding; the sampler still shuffles.
            lengths = [len(ids) for ids in dataset["input_ids"]]
            sampler = LengthGroupedSampler(self.task.batch_size, lengths=lengths)
            return self._loader(
                dataset, self.task.batch_size, sampler=sampler, collate_fn=self.train_collator
            )
        return self._loader(dataset, self.task.batch_size, shuffle=True, collate_fn=self.train_collator)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["validation"], self.task.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], self.task.eval_batch_size)

    def _loader(self, dataset, batch_size: int, **kwargs) -> DataLoader:
        kwargs.setdefault("collate_fn", self.collator)
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers, **kwargs)
