"""What a run was given to spend: steps, samples, tokens, a training-FLOPs estimate; and a divergence guard.

Budgets make comparisons fair (the leaderboard groups by them) and the counts are exact, summed
over DDP ranks. The FLOPs figure is an *estimate* of the usual kind (Kaplan et al. 2020, "Scaling
Laws for Neural Language Models", section 2.1: C ~= 6 N per token for full training), adapted to
frozen weights::

    forward                        2 * N * T
    backward, activation grads     2 * N * T   (the gradient still flows through frozen layers)
    backward, weight grads         2 * N_trainable * T

with N the non-embedding parameters of the model as trained (embedding lookups are not matmuls),
N_trainable its trainable non-embedding parameters and T the tokens processed, padding included
(the matmuls run on padded batches), plus the virtual tokens a soft prompt prepends to every input
(``Method.extra_processed_tokens``: prompt tuning's 20 tokens on a 27-token sentence nearly double
the work; counting only the real tokens made it look cheaper than full fine-tuning). ``tokens``
counts them too. Full fine-tuning gives 6 N T, a frozen backbone ~4 N T. It
ignores the attention score term (~ seq_len / (6 * hidden) relative, small at these lengths) and
over-counts methods whose gradient stops early (head-only backpropagates only through the head),
so it is an upper bound that is the same rule for every method.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from peftbench.knobs import check_value
from peftbench.methods.base import logical_numel

FLOPS_FORMULA = "2*N*T + 2*N*T + 2*N_trainable*T (N non-embedding params, T tokens processed incl. padding and soft-prompt tokens)"


class RunDiverged(RuntimeError):
    """The training loss became NaN or infinite: recorded as status ``diverged``."""


class BudgetCounter(L.Callback):
    """Counts steps, samples and tokens; stops the run as ``diverged`` on a non-finite loss.

    The finiteness check accumulates on the device and is read every ``check_every`` steps, so it
    adds no host synchronisation per step.
    """

    def __init__(self, check_every: int = 10) -> None:
        check_value("check_every", check_every, {"ge": 1}, integer=True)  # 0 would divide by zero mid-run
        self.check_every = check_every  # read the divergence flag every N steps (one host sync each)
        self.figures: dict[str, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self._samples: torch.Tensor | int = 0
        self._tokens: torch.Tensor | int = 0
        self._processed: torch.Tensor | int = 0
        self._nonfinite: torch.Tensor | bool = False
        self._steps = 0
        self._params = 0
        self._trainable = 0
        self._extra_per_sample = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        model = pl_module.model
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        params = [p for p in model.parameters() if id(p) not in embeddings]
        self._params = sum(logical_numel(p) for p in params)
        self._trainable = sum(logical_numel(p) for p in params if p.requires_grad)
        self._extra_per_sample = pl_module.extra_processed_tokens()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        ids = batch["input_ids"]
        extra = self._extra_per_sample * ids.shape[0]  # soft-prompt tokens: every layer processes them
        self._samples = self._samples + ids.shape[0]
        self._processed = self._processed + ids.numel() + extra
        mask = batch.get("attention_mask")
        self._tokens = self._tokens + (mask.sum() if mask is not None else ids.numel()) + extra
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._nonfinite = self._nonfinite | ~torch.isfinite(loss.detach())
        self._steps += 1
        if self._steps % self.check_every == 0:
            self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        flag = bool(self._nonfinite) if isinstance(self._nonfinite, torch.Tensor) else self._nonfinite
        if flag:
            raise RunDiverged(f"non-finite training loss by step {trainer.global_step}")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._check(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

        def total(value: torch.Tensor | int) -> int:  # summed over DDP ranks
            tensor = torch.as_tensor(value, device=pl_module.device, dtype=torch.float64)
            return int(trainer.strategy.reduce(tensor, reduce_op="sum").item())

        processed = total(self._processed)
        flops = (4 * self._params + 2 * self._trainable) * processed
        self.figures = {
            "steps": int(trainer.global_step),
            "samples": total(self._samples),
            "tokens": total(self._tokens),
            "tokens_processed": processed,
            "train_flops_est": float(flops),
            "train_flops_est_log10": math.log10(flops) if flops > 0 else None,
            "flops_formula": FLOPS_FORMULA,
            "world_size": int(trainer.world_size),
            "non_embedding_params": self._params,
            "extra_tokens_per_sample": self._extra_per_sample,
        }

    def report(self, result: Any) -> None:
        """The ``budget`` section of the result (results.Reporter)."""
        result.budget.update(self.figures)
