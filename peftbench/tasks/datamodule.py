"""Tokenised train/validation/test loaders with dynamic padding (one DataModule for every task).

Tokenisation runs once per (data, tokenizer, max length, truncation): ``datasets`` fingerprints the
map call (function source, its keyword arguments including the tokenizer, and the input data) and
reuses the cached Arrow file on the next run. Batches pad to their own longest row; evaluation
batches are drawn in length order so each pads little (metrics do not depend on row order).

Training data order belongs to the seed alone: the sampler draws from its own generator seeded from the run's
``seed``, so two methods at one seed see identical batches (a paired comparison), whatever random numbers the
method's own initialisation consumed from the global state. Evaluation rows carry ``example_index`` (their
position in the split), so per-example predictions are stored in split order and pair across runs.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from peftbench import quiet
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.sources import load_source, prepare_splits

# Batch key of an evaluation row's position in its split; the module strips it before the forward pass.
EXAMPLE_INDEX_KEY = "example_index"


def tokenize_batch(
    batch: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    truncation: str = "head",
    head_fraction: float = 0.25,
    pair: bool = False,
) -> dict[str, list]:
    """Tokenise a batch; long inputs keep their head, their tail, or both (``head+tail``).

    Head truncation is the tokenizer's own. Tail and head+tail (Sun et al. 2019, "How to Fine-Tune
    BERT for Text Classification?", keep the start and the end of long reviews) are not offered by
    tokenizers, so the full encoding is cut here around its special tokens.
    """
    pairs = batch["text_pair"] if pair else None
    if truncation == "head":
        return tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
    encoded = tokenizer(batch["text"], truncation=False, return_special_tokens_mask=True, verbose=False)
    special = encoded.pop("special_tokens_mask")
    head_share = head_fraction if truncation == "head+tail" else 0.0
    for row, mask in enumerate(special):
        if len(mask) <= max_length:
            continue
        content = [i for i, is_special in enumerate(mask) if not is_special]
        start, end = content[0], content[-1] + 1
        budget = max_length - (len(mask) - len(content))
        head = round(budget * head_share)
        keep = [
            *range(start),
            *range(start, start + head),
            *range(end - (budget - head), end),
            *range(end, len(mask)),
        ]
        for key in encoded:
            encoded[key][row] = [encoded[key][row][i] for i in keep]
    return dict(encoded)


class TaskDataModule(L.LightningDataModule):
    def __init__(
        self, task: TaskConfig, tokenizer: PreTrainedTokenizerBase, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.task = task
        self.tokenizer = tokenizer
        self.num_workers = num_workers
        self.seed = (
            seed  # the run's seed: the training data order (its own generator, see the module docstring)
        )
        self.datasets: DatasetDict | None = None
        self.setup_seconds = 0.0  # what setup() took (read, carve, tokenise)
        # Each batch pads to its own longest sequence, not to max_length. The kind may train with another collator
        # than it evaluates with (generation: evaluation batches also carry the prompts to decode).
        self.train_collator, self.collator = task.kind.collators(tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:  # Lightning calls setup for fit and again for test
            return
        start = time.perf_counter()
        if self.task.num_labels is None:  # classes left to the data (assemble.parts records them for a run)
            self.task.kind.infer_labels(self.task)
        raw = load_source(self.task)
        # Small data is carved and tokenised in seconds: datasets' map bars only for large data (peftbench/quiet.py).
        with quiet.hidden_datasets_bars(rows=sum(len(split) for split in raw.values())):
            splits = prepare_splits(self.task, raw)
            self.datasets = _index_eval_splits(self.task.kind.tokenize(self.task, splits, self.tokenizer))
        self.setup_seconds = time.perf_counter() - start  # read, carve, tokenise: a run's time_data_s

    def split_sizes(self) -> dict[str, int]:
        assert self.datasets is not None, "call setup() first"
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def train_generator(self) -> torch.Generator:
        """A fresh generator for the training order: every call (Lightning's, a method's scoring pass) starts
        from the seed, so drawing batches for anything else never shifts the order training sees."""
        return torch.Generator().manual_seed(int(self.seed))

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        generator = self.train_generator()
        if self.task.group_by_length:
            # Batches of similar length waste less compute on padding; the sampler still shuffles.
            sampler = LengthGroupedSampler(
                self.task.batch_size, lengths=_lengths(dataset), generator=generator
            )
            return self._loader(
                dataset, self.task.batch_size, sampler=sampler, collate_fn=self.train_collator
            )
        return self._loader(
            dataset, self.task.batch_size, shuffle=True, generator=generator, collate_fn=self.train_collator
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test split, plus the task's further reported splits (e.g. MNLI mismatched) in order."""
        loaders = [
            self._eval_loader("test"),
            *(self._eval_loader(role) for role in self.task.extra_test_splits),
        ]
        return loaders[0] if len(loaders) == 1 else loaders

    def _eval_loader(self, role: str) -> DataLoader:
        dataset = self.datasets[role]
        lengths = _lengths(dataset)
        # Longest first: batches pad little, and an out-of-memory batch shows up at once.
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        return self._loader(dataset, self.task.eval_batch_size, sampler=order)

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        kwargs.setdefault("collate_fn", self.collator)
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers, **kwargs)


def _index_eval_splits(datasets: DatasetDict) -> DatasetDict:
    """Every split but train gets its row positions as ``example_index`` (predictions are stored in that order)."""
    return DatasetDict(
        {
            role: dataset
            if role == "train"
            else dataset.add_column(EXAMPLE_INDEX_KEY, list(range(len(dataset))))
            for role, dataset in datasets.items()
        }
    )


def _lengths(dataset: Dataset) -> list[int]:
    return [len(ids) for ids in dataset["input_ids"]]
