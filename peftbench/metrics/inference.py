"""What a trained method costs at inference (eff/infer_*), measured the same way for every method.

After training and testing, the test batches run through the model as trained (adapter unmerged),
then, where the method can fold itself into the base weights (``Method.merged_model``), through the
merged model. Prompt-style methods cannot merge; they report the tokens they add to every input.
The timing loop is hand-written because Lightning's test loop adds metric and logging work that is
not inference cost; it runs under the trainer's own precision context so figures match training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from peftbench.methods.base import Method
from peftbench.tasks.datamodule import EXAMPLE_INDEX_KEY


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # Tensors only: generation batches also carry the prompts to decode, which a forward pass ignores, and
    # evaluation rows their split positions.
    return {
        k: v.to(device)
        for k, v in batch.items()
        if k not in ("labels", EXAMPLE_INDEX_KEY) and isinstance(v, torch.Tensor)
    }


@torch.no_grad()
def throughput(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device, context: Callable[[], Any]
) -> tuple[dict[str, float], torch.Tensor]:
    """Samples/s and non-padding tokens/s over ``batches`` (the first one untimed), and the first logits."""
    model.eval()
    with context():
        first = model(**_inputs(batches[0], device)).logits.float().cpu()  # warm-up, and the reference
    samples, tokens, seconds = 0, 0, 0.0
    for batch in batches[1:] or batches:
        inputs = _inputs(batch, device)
        _sync(device)
        start = time.perf_counter()
        with context():
            model(**inputs)
        _sync(device)
        seconds += time.perf_counter() - start
        samples += int(batch["input_ids"].shape[0])
        mask = batch.get("attention_mask")
        tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
    figures = {
        "samples_per_s": samples / seconds if seconds else float("nan"),
        "tokens_per_s": tokens / seconds if seconds else float("nan"),
    }
    return figures, first


def _take(loader: Iterable[dict[str, torch.Tensor]], count: int) -> list[dict[str, torch.Tensor]]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) >= count:
            break
    return batches


def measure_inference(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer,
    method: Method,
    max_batches: int,
) -> dict[str, float]:
    """eff/infer_* figures. May replace ``module.model`` by its merged form: call it last."""
    loaders = datamodule.test_dataloader()
    if isinstance(loaders, list):  # several reported splits (MNLI m/mm): time the first
        loaders = loaders[0]
    batches = _take(loaders, max(int(max_batches), 2))
    if not batches:
        return {}
    device = trainer.strategy.root_device
    context = trainer.precision_plugin.forward_context  # a fresh autocast context per call
    model = module.model.to(device)
    unmerged, reference = throughput(model, batches, device, context)
    figures: dict[str, float] = {f"infer_unmerged_{k}": v for k, v in unmerged.items()}
    figures["infer_extra_tokens"] = float(method.extra_input_tokens())
    merged_model = method.merged_model(model)
    figures["infer_mergeable"] = float(merged_model is not None)
    if merged_model is not None and merged_model is not model:  # same object: nothing was merged
        module.model = merged_model
        merged, logits = throughput(merged_model.to(device), batches, device, context)
        figures.update({f"infer_merged_{k}": v for k, v in merged.items()})
        # Folding in the adapter changes rounding only: a large gap means a broken merge.
        figures["infer_merge_max_abs_logit_diff"] = float((logits - reference).abs().max())
    return figures
