"""Sparse fine-tuning with a fixed mask: a chosen ``density`` of each backbone weight trains, the rest never moves.

The mask is chosen once, before the first optimizer step, by one of three scores (top-``density``
entries win):

- ``magnitude``: the largest pretrained ``|w|``;
- ``random``: uniform scores from a generator seeded with ``mask_seed``;
- ``fisher``: the diagonal empirical Fisher information, the sum of squared gradients of the task
  loss over ``fisher_batches`` training batches (Sung, Nair and Raffel 2021, "Training Neural
  Networks with Fixed Sparse Masks", NeurIPS 2021, arXiv:2111.09839). The paper squares
  per-example gradients; squaring per-batch gradients is the cheap approximation used here.

``scope: per_tensor`` keeps ``max(1, round(density * numel))`` entries of every tensor, so every
tensor adapts; ``scope: global`` ranks all entries together (the paper's choice), which can leave
whole tensors frozen. The task head (``model.head_modules``) is new and trains densely.

Why masked entries stay bit-identical (no library offers fixed masks for arbitrary optimizers):

1. A gradient hook zeroes their gradients, so clipping norms and Adam moments see only the
   unmasked entries (their update ``m / (sqrt(v) + eps)`` is exactly 0).
2. Decoupled weight decay (AdamW: ``w -= lr * wd * w``) still moves any parameter with a gradient,
   zero or not. An optimizer post-step hook therefore writes the masked entries' saved values back
   after every step. That keeps AdamW's semantics for the unmasked entries unchanged (no switch to
   L2-in-the-gradient, no per-entry decay groups) at the cost of one copy of the masked values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities import move_data_to_device
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules
from peftbench.methods.base import METHODS, Method, MethodConfig, ModelContext, knob, logical_numel


@dataclass
class SparseConfig(MethodConfig):
    density: float = knob(
        help="share of the backbone's entries that train (0.005 = the paper's 0.5 %)", gt=0, le=1
    )
    selection: Literal["magnitude", "random", "fisher"] = knob(
        "fisher", help="how entries are chosen: largest |w|, uniform scores, or squared task-loss gradients"
    )
    scope: Literal["per_tensor", "global"] = knob(
        "per_tensor", help="keep density of every tensor (at least 1 entry), or rank all entries together"
    )
    fisher_batches: int = knob(
        8, help="training batches summed for the Fisher scores (selection=fisher)", ge=1
    )
    mask_seed: int = knob(
        0, help="seed of the random scores (selection=random); the YAML passes the run's seed"
    )


@METHODS.register
class SparseFineTuning(Method):
    Config = SparseConfig
    config: SparseConfig

    def __init__(self, name: str, config: SparseConfig | None = None, **knobs: Any) -> None:
        super().__init__(name, config, **knobs)
        self.head_modules: list[str] = []
        self.masks: dict[str, torch.Tensor] | None = None  # name -> bool, True = trains; built at fit start

    # --- transform and accounting ------------------------------------------------------------------------
    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(True)  # every tensor gets gradients; the mask decides which entries move
        self.head_modules = list(context.head_modules)
        return model

    def masked_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The backbone tensors the mask applies to (trainable, outside the head), in name order."""
        return [
            (name, param)
            for name, param in model.named_parameters()
            if param.requires_grad and not in_modules(name, self.head_modules)
        ]

    def _budget(self, numel: int) -> int:
        return max(1, round(self.config.density * numel))

    def trainable_parameter_count(self, model: nn.Module) -> int:
        """Unmasked entries plus the dense head; known from the budget before the mask is built."""
        masked = self.masked_parameters(model)
        if self.masks is not None:
            free = sum(int(self.masks[name].sum()) for name, _ in masked)
        elif self.config.scope == "per_tensor":
            free = sum(self._budget(logical_numel(p)) for _, p in masked)
        else:
            free = self._budget(sum(logical_numel(p) for _, p in masked))
        head = sum(
            logical_numel(p)
            for n, p in model.named_parameters()
            if p.requires_grad and in_modules(n, self.head_modules)
        )
        return free + head

    # --- mask ----------------------------------------------------------------------------------------------
    def scores(self, model: nn.Module, batches: Any = None) -> dict[str, torch.Tensor]:
        """Per-entry importance of every masked tensor (higher = more likely to train)."""
        params = self.masked_parameters(model)
        if self.config.selection == "magnitude":
            return {name: p.detach().abs().float() for name, p in params}
        if self.config.selection == "random":
            generator = torch.Generator().manual_seed(self.config.mask_seed)
            return {name: torch.rand(p.shape, generator=generator).to(p.device) for name, p in params}
        if batches is None:
            raise ConfigError(
                f"method.selection=fisher: {self.name} needs training batches to estimate Fisher scores"
            )
        return fisher_scores(model, params, batches, self.config.fisher_batches)

    def build_masks(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Choose the entries that train: top scores per tensor or over all tensors (``scope``)."""
        if self.config.scope == "per_tensor":
            masks = {name: top_k_mask(score, self._budget(score.numel())) for name, score in scores.items()}
        else:
            flat = torch.cat([score.flatten() for score in scores.values()])
            chosen = top_k_mask(flat, self._budget(flat.numel()))
            masks, start = {}, 0
            for name, score in scores.items():
                masks[name] = chosen[start : start + score.numel()].view_as(score)
                start += score.numel()
        self.masks = masks
        return masks

    def callbacks(self) -> list[L.Callback]:
        return [SparseMaskCallback(self)]


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """A bool tensor shaped like ``score`` with exactly ``k`` True entries at the highest scores."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[torch.topk(score.flatten(), k, sorted=False).indices] = True
    return mask.view_as(score)


def fisher_scores(
    model: nn.Module, params: list[tuple[str, nn.Parameter]], batches: Any, max_batches: int
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: squared loss gradients summed over ``max_batches`` batches (eval mode)."""
    scores = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the score depends on the weights and the data only
    for seen, batch in enumerate(batches):
        if seen >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        model(**move_data_to_device(batch, device)).loss.backward()
        for name, p in params:
            if p.grad is not None:
                scores[name] += p.grad.detach().float().square()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


class SparseMaskCallback(L.Callback):
    """Builds the mask when fit starts (model on its device, batches available) and enforces it."""

    def __init__(self, method: SparseFineTuning) -> None:
        self.method = method
        self._handles: list[Any] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        if self.method.masks is None:
            batches = None
            if self.method.config.selection == "fisher":
                if trainer.datamodule is None:
                    raise ConfigError(
                        "method.selection=fisher: needs trainer.fit(..., datamodule=...) for batches"
                    )
                batches = trainer.datamodule.train_dataloader()
            device = pl_module.device
            # A forked RNG: drawing score batches must not change the training data order or dropout.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                scores = self.method.scores(model, batches)
            # Every rank must hold the same mask: sum the scores over ranks (identity on one device).
            scores = {name: trainer.strategy.reduce(score, reduce_op="sum") for name, score in scores.items()}
            self.method.build_masks(scores)
        self._enforce(model, trainer.optimizers)

    def _enforce(self, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
        frozen: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for name, param in self.method.masked_parameters(model):
            mask = self.method.masks[name].to(param.device)
            self.method.masks[name] = mask
            if bool(mask.all()):
                continue  # density 1 for this tensor: nothing to hold
            self._handles.append(param.register_hook(lambda grad, mask=mask: grad * mask))
            held = ~mask
            frozen.append((param, held, param.detach()[held].clone()))

        @torch.no_grad()
        def restore(*_: Any) -> None:
            for param, held, values in frozen:
                param.masked_scatter_(held, values)

        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_post_hook(restore))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
