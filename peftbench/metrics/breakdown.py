"""Where a run's peak memory goes: weights, gradients, optimizer state, activations, and the rest.

Users of every PEFT library are confused by memory (LoRA above full fine-tuning at long context, QLoRA above
full fine-tuning on a CPU); a peak alone cannot say why. This splits the training peak into parts, each from
its own source:

- ``frozen_weights`` and ``trainable_weights``: the parameters' (and buffers') storages, counted once each
  (tied weights share one), by ``requires_grad``. From the tensors themselves.
- ``gradients``: the ``.grad`` storages just before the optimizer step (the moment they are all alive).
- ``optimizer_state``: every tensor in the optimizer's state after its first step (Adam's two moments, ...).
- ``activations_saved``: the storages autograd saves for backward in a step's forward, through
  ``torch.autograd.graph.saved_tensors_hooks`` (parameters excluded: they are counted above; autocast's
  low-precision weight copies are included, since they are memory the step allocates). Probed on every step
  whose padded batch is the largest so far, so the figure is the largest step's.
- ``runtime``: what the process held at the start of training besides the weights: on CPU the interpreter,
  libraries, tokenizer and data (RSS baseline minus the weights); on a GPU, allocations other than the weights
  (near zero).
- ``workspace``: the measured peak minus all of the above, the part no tensor accounts for: temporaries
  inside a backward op, the allocator's caching and fragmentation, a validation pass's buffers. A negative
  value means the parts overlapped in time less than a sum assumes (they were never all alive at once).

The peak and the baseline come from the allocator (CUDA ``max_memory_allocated``) or the OS (CPU RSS), the
same figures as ``eff/peak_mem_mb``; the parts are sizes of tensors. Torch has no per-category memory
accounting on CPU, and ``torch.cuda.memory._snapshot`` is CUDA-only and heavy, hence this small walker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

MIB = 2**20
PARTS = (
    "runtime",
    "frozen_weights",
    "trainable_weights",
    "gradients",
    "optimizer_state",
    "activations_saved",
    "workspace",
)


def _storages(tensors: Iterable[torch.Tensor | None], seen: set[int] | None = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a storage shared by views or ties counts once)."""
    seen = set() if seen is None else seen
    total = 0
    for tensor in tensors:
        if tensor is None or not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in seen or key == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Frozen (with buffers) and trainable parameter storages of ``model``, in bytes."""
    seen: set[int] = set()
    trainable = _storages((p for p in model.parameters() if p.requires_grad), seen)
    frozen = _storages((p for p in model.parameters() if not p.requires_grad), seen)
    frozen += _storages(model.buffers(), seen)
    return {"frozen_weights": frozen, "trainable_weights": trainable}


def gradient_bytes(model: nn.Module) -> int:
    return _storages(p.grad for p in model.parameters())


def optimizer_state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    seen: set[int] = set()
    total = 0
    for optimizer in optimizers:
        for state in optimizer.state.values():
            total += _storages((v for v in state.values() if isinstance(v, torch.Tensor)), seen)
    return total


class SavedActivationProbe:
    """Sums the storages autograd saves during one forward (a context manager around it)."""

    def __init__(self, model: nn.Module) -> None:
        self._excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: set[int] = set()
        self.bytes = 0
        self._hooks: Any = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # A sparse COO tensor (SHiRA's update) has no storage of its own: its indices and values hold it.
        parts = (tensor._indices(), tensor._values()) if tensor.layout == torch.sparse_coo else (tensor,)
        for part in parts:
            if part.device.type == "meta" or part.layout != torch.strided:
                continue
            storage = part.untyped_storage()
            key = storage.data_ptr()
            if key not in self._excluded and key not in self._seen and key != 0:
                self._seen.add(key)
                self.bytes += storage.nbytes()
        return tensor  # saved as autograd would save it: the probe only counts

    def __enter__(self) -> SavedActivationProbe:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None
        self._seen.clear()  # data pointers only; no tensor is kept alive


def breakdown(
    peak_mb: float,
    baseline_mb: float,
    weights: dict[str, int],
    gradients: int,
    optimizer_state: int,
    activations_saved: int,
) -> dict[str, float]:
    """The parts of ``peak_mb`` in MiB (``mem_<part>_mb``), ``runtime`` and ``workspace`` as the remainders."""
    parts = {
        "frozen_weights": weights["frozen_weights"] / MIB,
        "trainable_weights": weights["trainable_weights"] / MIB,
        "gradients": gradients / MIB,
        "optimizer_state": optimizer_state / MIB,
        "activations_saved": activations_saved / MIB,
    }
    parts["runtime"] = baseline_mb - parts["frozen_weights"] - parts["trainable_weights"]
    parts["workspace"] = (
        peak_mb
        - baseline_mb
        - sum(parts[key] for key in ("gradients", "optimizer_state", "activations_saved"))
    )
    return {f"mem_{part}_mb": parts[part] for part in PARTS}
