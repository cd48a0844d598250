"""Forgetting: how far fine-tuning moved the model away from what it was, measured on held-out text.

:class:`ForgettingMonitor` is a Lightning callback (enabled with ``callbacks=forgetting``). Before
training (``on_fit_start``) and after it (``on_fit_end``, the final weights) it runs the model over
the same held-out texts and reports, under ``ref/``:

- representation drift of every model: mean cosine similarity and linear CKA (Kornblith et al.
  2019, arXiv:1905.00414) between the mean-pooled last hidden states before and after (1.0 = the
  backbone computes exactly what it did; encoders such as MiniLM ship no MLM head, so this is their
  forgetting measure);
- for decoders (``lm_loss: true``), the causal-LM loss and perplexity on those texts before and after,
  through the model's LM head or, for sequence classification, its tied input embeddings.

It works through the model's ordinary forward pass, so it needs no knowledge of the method.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")
TEXT_SOURCES = ("task", "corpus")


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two (examples x features) matrices; 1.0 for identical ones.

    A few lines of algebra (no library ships it for torch tensors); float64 for stable norms.
    """
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / denominator) if denominator > 0 else float("nan")


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cosine_similarity(x.double(), y.double(), dim=-1).mean())


class ForgettingMonitor(L.Callback):
    """Reference evaluation before and after fine-tuning; figures land in ``figures`` (``ref/...``)."""

    def __init__(
        self,
        texts: str = "task",
        corpus: dict[str, Any] | None = None,
        num_texts: int = 64,
        max_length: int = 128,
        batch_size: int = 16,
        lm_loss: bool = False,
    ) -> None:
        if texts not in TEXT_SOURCES:
            raise ConfigError(f"callbacks.forgetting.texts={texts}: allowed {', '.join(TEXT_SOURCES)}")
        if texts == "corpus" and not (corpus and corpus.get("data_files")):
            raise ConfigError("callbacks.forgetting.corpus.data_files: required with texts=corpus")
        if (
            texts == "corpus" and not Path(str(corpus["data_files"])).is_file()
        ):  # found now, not after training
            from peftbench.tasks.sources import FETCH_HINT

            raise ConfigError(
                f"callbacks.forgetting.corpus.data_files={corpus['data_files']}: no such file; {FETCH_HINT}"
            )
        for key, value in (("num_texts", num_texts), ("max_length", max_length), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"callbacks.forgetting.{key}={value}: must be >= 1")
        self.texts = texts
        self.corpus = dict(corpus or {})
        self.num_texts = num_texts
        self.max_length = max_length
        self.batch_size = batch_size
        self.lm_loss = lm_loss
        self.figures: dict[str, float] = {}
        self._batches: list[dict[str, torch.Tensor]] = []
        self._before: dict[str, Any] = {}

    # --- held-out text ------------------------------------------------------------------------------
    def _token_rows(self, trainer: L.Trainer) -> list[list[int]]:
        datamodule = trainer.datamodule
        if self.texts == "task":  # the task's test inputs: never trained on, always available offline
            rows = datamodule.datasets["test"]["input_ids"][: self.num_texts]
            return [list(r[: self.max_length]) for r in rows]
        from datasets import load_dataset

        from peftbench.tasks.sources import FETCH_HINT

        options = {k: v for k, v in self.corpus.items() if k not in ("text_column", "data_files")}
        files = self.corpus["data_files"]
        if not Path(files).is_file():
            raise FileNotFoundError(f"callbacks.forgetting.corpus.data_files={files} not found; {FETCH_HINT}")
        data = load_dataset("csv", data_files=files, split="train", **options)
        data = data.shuffle(seed=0).select(range(min(self.num_texts, len(data))))
        column = self.corpus.get("text_column", "text")
        encoded = datamodule.tokenizer(list(data[column]), truncation=True, max_length=self.max_length)
        return encoded["input_ids"]

    def _make_batches(self, trainer: L.Trainer) -> None:
        rows = self._token_rows(trainer)
        pad = trainer.datamodule.tokenizer.pad_token_id
        left = trainer.datamodule.tokenizer.padding_side == "left"
        self._batches = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(len(r) for r in chunk)
            ids, mask = [], []
            for r in chunk:
                fill = width - len(r)
                ids.append([pad] * fill + r if left else r + [pad] * fill)
                mask.append([0] * fill + [1] * len(r) if left else [1] * len(r) + [0] * fill)
            self._batches.append({"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)})

    # --- one evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer, model: nn.Module) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        device = trainer.strategy.root_device
        plugin = getattr(trainer, "precision_plugin", None)
        features, loss_sum, token_count = [], 0.0, 0
        for batch in self._batches:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            with plugin.forward_context() if plugin is not None else nullcontext():
                output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            hidden = output.hidden_states[-1][
                :, -ids.shape[1] :
            ].float()  # drop prompt-learning virtual tokens
            weights = mask.unsqueeze(-1).float()
            features.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu())
            if self.lm_loss:
                logits = self._lm_logits(model, output, hidden)
                if logits is not None:
                    labels = ids.masked_fill(mask == 0, -100)
                    loss = F.cross_entropy(
                        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="sum"
                    )
                    loss_sum += float(loss)
                    token_count += int((labels[:, 1:] != -100).sum())
        if was_training:
            model.train()
        result: dict[str, Any] = {"features": torch.cat(features)}
        if token_count:
            result["lm_loss"] = loss_sum / token_count
        return result

    @staticmethod
    def _lm_logits(model: nn.Module, output: Any, hidden: torch.Tensor) -> torch.Tensor | None:
        """Next-token logits: the model's own (causal-LM head) or its tied input embeddings (classification)."""
        logits = output.logits
        if logits.dim() == 3:  # a causal LM: (batch, length, vocabulary); classification logits are 2-D
            return logits[:, -hidden.shape[1] :]
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not getattr(base.config.get_text_config(), "tie_word_embeddings", False):
            return None  # no LM head and no tied embeddings: only representation drift is measured
        return hidden @ base.get_input_embeddings().weight.float().T

    # --- hooks --------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.figures = {}
        self._make_batches(trainer)
        self._before = self._evaluate(trainer, pl_module.model)
        if self.lm_loss and "lm_loss" not in self._before:
            log.warning("ref/: no LM head and untied embeddings; only representation drift is measured")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._before:
            return
        after = self._evaluate(trainer, pl_module.model)
        before_features, after_features = self._before["features"], after["features"]
        figures = {
            "ref/num_texts": float(before_features.shape[0]),
            "ref/cosine": mean_cosine(before_features, after_features),
            "ref/cka": linear_cka(before_features, after_features),
        }
        if "lm_loss" in self._before and "lm_loss" in after:
            figures.update(
                {
                    "ref/lm_loss_before": self._before["lm_loss"],
                    "ref/lm_loss_after": after["lm_loss"],
                    "ref/lm_loss_delta": after["lm_loss"] - self._before["lm_loss"],
                    "ref/ppl_before": math.exp(min(self._before["lm_loss"], 50.0)),
                    "ref/ppl_after": math.exp(min(after["lm_loss"], 50.0)),
                }
            )
        self.figures = figures
        for logger in trainer.loggers:
            logger.log_metrics(figures, step=trainer.global_step)

    def report(self, result: Any) -> None:
        """The ``reference`` section of the result (results.Reporter): the ref/ figures."""
        result.reference = dict(self.figures)
