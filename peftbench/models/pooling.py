"""The sentence representation a classification head reads (``model.pooling``).

transformers' BERT classifier reads the pretrained pooler (a dense layer and tanh on the [CLS] state). That is
the representation BERT's next-sentence objective trained, but not every BERT-layout checkpoint's: a
sentence-transformer such as all-MiniLM-L6-v2 was trained on the *mean* of its last hidden states, and its
pooler was never trained (its bias is all zeros). A head on the wrong representation makes head-only and every
method's head start from features the checkpoint never learned to produce, so the model config declares it:

- ``native``: what transformers builds (BERT: the pooler on [CLS]; RoBERTa, DeBERTa, decoders: their own head);
- ``cls``: the [CLS] (first-token) state itself, no pooler layer;
- ``mean``: the attention-masked mean of the last hidden states, no pooler layer (padding never enters it).

``cls`` and ``mean`` replace the backbone's ``pooler`` module, which BERT's classifier calls on the last hidden
states; transformers offers no switch for this, hence this small module. The pooler sees only the hidden
states, so a forward pre-hook on the backbone keeps the call's attention mask for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError

POOLINGS = ("native", "cls", "mean")
# Architectures whose classifier reads ``<backbone>.pooler``: there the pooler can be replaced.
REPLACEABLE_POOLER = ("bert",)


def check_pooling(pooling: str, architecture: str) -> None:
    """The pooling names one of POOLINGS, and a non-native one needs a replaceable pooler."""
    if pooling not in POOLINGS:
        raise ConfigError(f"model.pooling={pooling}: allowed {', '.join(POOLINGS)}")
    if pooling != "native" and architecture not in REPLACEABLE_POOLER:
        raise ConfigError(
            f"model.pooling={pooling}: {architecture}'s head pools inside itself (no pooler module to replace); "
            f"allowed here: native ({pooling} needs one of {', '.join(REPLACEABLE_POOLER)})"
        )


class SequencePooler(nn.Module):
    """A parameter-free stand-in for BERT's pooler: the [CLS] state or the masked mean of the hidden states."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.attention_mask: torch.Tensor | None = None  # the current call's, set by the backbone's pre-hook

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return hidden_states[:, 0]
        mask = self.attention_mask
        if mask is None or mask.dim() != 2:
            return hidden_states.mean(dim=1)
        # Prefix tuning lengthens the mask by its virtual tokens, which are keys only (not hidden states): the
        # sequence's own positions are the mask's last ones.
        mask = mask[:, -hidden_states.shape[1] :].to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def apply_pooling(model: nn.Module, pooling: str) -> None:
    """Replace the backbone's pooler for ``cls``/``mean`` (a no-op for ``native``)."""
    if pooling == "native":
        return
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if backbone is None or getattr(backbone, "pooler", None) is None:
        raise ConfigError(
            f"model.pooling={pooling}: {type(model).__name__} has no pooler on its backbone to replace; "
            "allowed here: native"
        )
    pooler = SequencePooler(pooling)
    backbone.pooler = pooler

    def keep_mask(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        pooler.attention_mask = mask if mask is not None or len(args) < 2 else args[1]

    backbone.register_forward_pre_hook(keep_mask, with_kwargs=True)
