"""Bottleneck adapters: ``h + up(act(down(h)))`` inserted on sublayer outputs, before the residual add.

One implementation, two recipes (conf/method/houlsby.yaml, conf/method/pfeiffer.yaml):

- Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP" (ICML, arXiv:1902.00751):
  an adapter after the attention output projection and one after the feed-forward output, with the
  layer norms trained too.
- Pfeiffer et al. 2021, "AdapterFusion" (EACL, arXiv:2005.00247): one adapter per block, after the
  feed-forward output only. (AdapterHub's variant also reorders the residual around the layer
  norm; here both recipes share one insertion rule, so they differ only in where and what trains.)

``sites`` are module paths inside each transformer block whose *output* is the sublayer's output
before its residual add (``attention.output.dense`` and ``output.dense`` in BERT, ``self_attn.o_proj``
and ``mlp.down_proj`` in Llama); the model YAML names them (``model.adapter_points``), so no
architecture is special-cased here. The adapter width is ``hidden // reduction_factor``; both
projections start from a truncated normal with a small ``init_std`` (zero biases), so the adapted
model starts near the identity, as Houlsby et al. prescribe.

Written by hand because AdapterHub's ``adapters`` package pins an older transformers and peft has
no bottleneck adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN

from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules, mark_added, transformer_layers
from peftbench.methods.base import METHODS, Method, MethodConfig, ModelContext, knob
from peftbench.methods.head_only import set_head_trainable


class BottleneckAdapter(nn.Module):
    """Down-projection, nonlinearity, up-projection, plus a skip connection."""

    def __init__(self, hidden: int, bottleneck: int, nonlinearity: str, init_std: float) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACT2FN[nonlinearity]
        self.up = nn.Linear(bottleneck, hidden)
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
            nn.init.zeros_(linear.bias)
        mark_added(self)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class AdaptedOutput(nn.Module):
    """A sublayer's output module followed by its adapter (the wrapped module's weights stay frozen)."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.adapter(self.base(*args, **kwargs))


@dataclass
class BottleneckAdapterConfig(MethodConfig):
    sites: list[str | None] = knob(
        help="module paths inside each block whose output gets an adapter (the model YAML's adapter_points)"
    )
    reduction_factor: int | float = knob(16, help="adapter width = hidden // reduction_factor", gt=0)
    bottleneck_size: int | None = knob(
        None, help="the width itself (papers state it so); overrides reduction_factor", ge=1
    )
    nonlinearity: str = knob(
        "relu", help="activation in the bottleneck (a transformers ACT2FN name)", choices=sorted(ACT2FN)
    )
    init_std: float = knob(
        1e-2, help="std of both projections' truncated-normal init (0 would leave the adapter dead)", gt=0
    )
    train_layernorm: bool = knob(False, help="also train the layer norms (Houlsby et al.)")
    layernorm_modules: list[str] = knob(
        default_factory=list, help="which modules are the layer norms (model YAML)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sites:
            raise ConfigError("method.sites=[]: name at least one adapter site (see model.adapter_points)")
        if any(site is None for site in self.sites):
            raise ConfigError(
                f"method.sites={self.sites}: a site is null: this model's YAML sets no model.adapter_points "
                "for it, so this adapter recipe cannot be placed (add the module path inside a block)"
            )
        if self.train_layernorm and not self.layernorm_modules:
            raise ConfigError("method.layernorm_modules: empty while method.train_layernorm=true")


@METHODS.register
class BottleneckAdapterMethod(Method):
    Config = BottleneckAdapterConfig
    config: BottleneckAdapterConfig

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        for block in transformer_layers(model, context.layers_path):
            for site in self.config.sites:
                self._insert(block, site, context)
        if self.config.train_layernorm:
            modules = self.config.layernorm_modules
            norms = [p for n, p in model.named_parameters() if in_modules(n, modules)]
            if not norms:
                raise ConfigError(f"method.layernorm_modules={modules}: match no module of the model")
            for param in norms:
                param.requires_grad_(True)
        set_head_trainable(model, context.head_modules)
        return model

    def _insert(self, block: nn.Module, site: str, context: ModelContext) -> None:
        try:
            target = block.get_submodule(site)
        except AttributeError:
            raise ConfigError(
                f"method.sites: '{site}' is no module inside {context.layers_path}.<i> of this model "
                "(check model.adapter_points)"
            ) from None
        hidden = getattr(target, "out_features", None)
        if hidden is None:
            raise ConfigError(f"method.sites: '{site}' is a {type(target).__name__}; expected a linear layer")
        # Papers state the width directly (LoRA's Table 9: adapter r=8/16/64); else it follows the hidden size.
        bottleneck = self.config.bottleneck_size or int(hidden // self.config.reduction_factor)
        if bottleneck < 1:
            raise ConfigError(
                f"method.reduction_factor={self.config.reduction_factor}: leaves no bottleneck width for hidden size {hidden}"
            )
        reference = target.weight
        adapter = BottleneckAdapter(hidden, bottleneck, self.config.nonlinearity, self.config.init_std)
        adapter.to(device=reference.device, dtype=reference.dtype)
        parent_name, _, leaf = site.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        setattr(parent, leaf, AdaptedOutput(target, adapter))
