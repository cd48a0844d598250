"""Generative tasks (``task.type: generation``): prompt -> answer on decoders.

Training feeds ``prompt + answer + eos`` and supervises only the answer tokens (causal-LM loss, the
prompt's labels are -100). Evaluation also computes that loss, then greedily generates from the
prompt alone and scores exact match of the extracted answer. Everything task-specific is data in
the task YAML's ``generation:`` block (validated by :class:`GenerationSpec`).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from torchmetrics import Metric
from transformers import PreTrainedTokenizerBase

from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")
IGNORE_INDEX = -100  # label value the causal-LM loss skips (prompt tokens and padding)
GENERATE_KEY = "generate"  # batch key holding the prompt-only inputs and gold answers of eval batches


@dataclass
class GenerationSpec:
    """How a row becomes a prompt and a target, how long to decode, and how an answer is read off."""

    prompt_template: str = "{text}"  # python format string over the text column, e.g. "Q: {text}\nA:"
    answer_prefix: str = " "  # put between prompt and answer in training (generation continues after it)
    max_new_tokens: int = 16  # greedy decoding budget at evaluation
    answer_regex: str | None = None  # group 1 is the answer (applied to gold and prediction); None: all
    ignore_chars: str = ""  # characters dropped before comparing, e.g. "," so 1,000 == 1000
    ignore_case: bool = False  # compare case-insensitively
    max_answer_tokens: int | None = None  # truncate training targets to this many tokens (None: max_length)

    def __post_init__(self) -> None:
        if "{text}" not in self.prompt_template:
            raise ConfigError(
                f"task.generation.prompt_template={self.prompt_template!r}: must contain {{text}}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"task.generation.max_new_tokens={self.max_new_tokens}: must be >= 1")
        if self.answer_regex is not None:
            try:
                pattern = re.compile(self.answer_regex)
            except re.error as error:
                raise ConfigError(f"task.generation.answer_regex={self.answer_regex!r}: {error}") from None
            if pattern.groups < 1:
                raise ConfigError(
                    f"task.generation.answer_regex={self.answer_regex!r}: needs a capture group (the answer)"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GenerationSpec:
        from peftbench.config import dataclass_from_cfg

        return dataclass_from_cfg(cls, data or {}, "task.generation")

    def prompt(self, text: str) -> str:
        return self.prompt_template.format(text=text)

    def extract(self, text: str) -> str:
        """The comparable answer in a gold or generated text."""
        if self.answer_regex is not None:
            match = re.search(self.answer_regex, text)
            text = match.group(1) if match else text
        else:
            text = text.split("\n", 1)[0]  # a free-form answer ends at the first newline
        text = text.strip()
        for char in self.ignore_chars:
            text = text.replace(char, "")
        return text.lower() if self.ignore_case else text


class ExactMatch(Metric):
    """Share of predictions equal to the gold answer, over strings (states are sums: correct under DDP).

    Written here because torchmetrics has no plain string exact match (its SQuAD metric needs
    SQuAD's dict format and reports percentages); answers arrive already normalised.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: list[str], target: list[str]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} predictions for {len(target)} answers")
        self.correct += sum(p == t for p, t in zip(preds, target, strict=True))
        self.total += len(target)

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)


# --- data ------------------------------------------------------------------------------------------------


def tokenize_splits(
    splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, spec: GenerationSpec, max_length: int
) -> DatasetDict:
    """Prompt+answer ids with answer-only labels, the prompt ids alone, and the extracted gold answer."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("model tokenizer has no eos token: generation tasks need one to end answers")
    answer_budget = spec.max_answer_tokens or max_length

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {
            "input_ids": [],
            "attention_mask": [],
            "labels": [],
            "prompt_ids": [],
            "answer": [],
        }
        prompts = tokenizer([spec.prompt(t) for t in batch["text"]], add_special_tokens=True)["input_ids"]
        answers = tokenizer([spec.answer_prefix + str(a) for a in batch["label"]], add_special_tokens=False)[
            "input_ids"
        ]
        for prompt, answer, gold in zip(prompts, answers, batch["label"], strict=True):
            answer = answer[: min(answer_budget, max_length - 1)] + [eos]
            prompt = (
                prompt[-(max_length - len(answer)) :] if len(prompt) + len(answer) > max_length else prompt
            )
            ids = prompt + answer
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append([IGNORE_INDEX] * len(prompt) + answer)
            out["prompt_ids"].append(prompt)
            out["answer"].append(spec.extract(str(gold)))
        return out

    columns = splits["train"].column_names
    return splits.map(encode, batched=True, remove_columns=columns, desc="tokenizing prompts and answers")


class GenerationCollator:
    """Pads training sequences (labels with -100); eval batches also carry left-padded prompts and answers."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, with_prompts: bool) -> None:
        self.tokenizer = tokenizer
        self.with_prompts = with_prompts

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        left = self.tokenizer.padding_side == "left"
        padded = [
            ([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows
        ]
        return torch.tensor(padded, dtype=torch.long)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        batch: dict[str, Any] = {
            "input_ids": self._pad([r["input_ids"] for r in rows], pad),
            "attention_mask": self._pad([r["attention_mask"] for r in rows], 0),
            "labels": self._pad([r["labels"] for r in rows], IGNORE_INDEX),
        }
        if self.with_prompts:
            prompts = [r["prompt_ids"] for r in rows]
            width = max(len(p) for p in prompts)
            # Generation continues after the last position, so prompts are always padded on the left.
            batch[GENERATE_KEY] = {
                "input_ids": torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long),
                "attention_mask": torch.tensor(
                    [[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long
                ),
                "answers": [r["answer"] for r in rows],
            }
        if rows and "example_index" in rows[0]:  # evaluation rows: their position in the split
            batch["example_index"] = torch.tensor([r["example_index"] for r in rows], dtype=torch.long)
        return batch


class GenerationEvaluator:
    """Greedy decoding from prompts and answer extraction (what the module calls in eval steps).

    ``model.generate`` is used when it agrees with a plain forward pass. On the first batch the
    first generated token is checked against the forward pass's argmax; where they differ (seen
    with peft prefix tuning under transformers 5.24: generate passes its own ``cache`` and the
    prefix, handed over as ``past_key_values``, is dropped), decoding falls back to a cache-free
    greedy loop over forward passes, slower but exact for every method. See docs/decoders.md.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, spec: GenerationSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.use_generate: bool | None = None  # decided on the first batch

    def __call__(self, model: nn.Module, batch: dict[str, Any], output: Any) -> tuple[list[str], list[str]]:
        """An evaluation batch's decoded answers and gold answers (the task kind's predictor protocol)."""
        prompts = batch[GENERATE_KEY]
        return self.predict(model, prompts), prompts["answers"]

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: dict[str, Any]) -> list[str]:
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        if self.use_generate is None:
            self.use_generate = self._generate_agrees_with_forward(model, input_ids, attention_mask)
            if not self.use_generate:
                log.warning(
                    "generate() disagrees with the model's forward pass; decoding greedily without a KV cache"
                )
        if self.use_generate:
            output = self._generate(model, input_ids, attention_mask, self.spec.max_new_tokens)
        else:
            output = self._greedy_by_forward(model, input_ids, attention_mask)
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [self.spec.extract(text) for text in texts]

    def _generate(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
    ) -> torch.Tensor:
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        # Most models return prompt + continuation; with only embeddings as input some return the
        # continuation alone. Strip the prompt only where it is there.
        width = input_ids.shape[1]
        if output.shape[1] >= width and torch.equal(output[:, :width], input_ids):
            output = output[:, width:]
        return output

    def _generate_agrees_with_forward(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> bool:
        first = self._generate(model, input_ids, attention_mask, max_new_tokens=1)[:, 0]
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1].argmax(-1)
        return bool(torch.equal(first, expected))

    def _greedy_by_forward(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new_tokens = []
        for _ in range(self.spec.max_new_tokens):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1]
            token = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
            new_tokens.append(token)
            done |= token == eos
            input_ids = torch.cat([input_ids, token[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(token)[:, None]], dim=1)
            if bool(done.all()):
                break
        return torch.stack(new_tokens, dim=1)


# --- an offline generative task ----------------------------------------------------------------------------


def arith(num_examples: int = 512, seed: int = 0, max_operand: int = 20, operations: str = "+-") -> Dataset:
    """Synthetic arithmetic prompts ("12 + 7 =") with their answers, generated from a seed.

    Small enough for a tiny model to overfit in a test, non-trivial for a 135 M decoder to get exactly
    right, and available with no download.
    """
    unknown = sorted(set(operations) - set("+-*"))
    if unknown:
        raise ConfigError(f"task.source.operations={operations!r}: allowed characters + - *")
    rng = random.Random(seed)
    texts, answers = [], []
    for _ in range(num_examples):
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(operations)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        texts.append(f"{a} {op} {b} =")
        answers.append(str(value))
    return Dataset.from_dict({"text": texts, "label": answers})
