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

from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN

from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules, mark_added, transformer_layers
from peftbench.methods.base import METHODS, Method, ModelContext
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


@METHODS.register
class BottleneckAdapterMethod(Method):
    def __init__(
        self,
        name: str,
        sites: list[str | None],
        reduction_factor: int = 16,
        bottleneck_size: int | None = None,
        nonlinearity: str = "relu",
        init_std: float = 1e-2,
        train_layernorm: bool = False,
        layernorm_modules: list[str] | None = None,
    ) -> None:
        super().__init__(name)
        if not sites:
            raise ConfigError("method.sites=[]: name at least one adapter site (see model.adapter_points)")
        if any(site is None for site in sites):
            raise ConfigError(
                f"method.sites={sites}: a site is null: this model's YAML sets no model.adapter_points "
                "for it, so this adapter recipe cannot be placed (add the module path inside a block)"
            )
        if (
            isinstance(reduction_factor, bool)
            or not isinstance(reduction_factor, int | float)
            or reduction_factor <= 0
        ):
            raise ConfigError(f"method.reduction_factor={reduction_factor!r}: expected a number > 0")
        if bottleneck_size is not None and (
            isinstance(bottleneck_size, bool) or not isinstance(bottleneck_size, int) or bottleneck_size < 1
        ):
            raise ConfigError(
                f"method.bottleneck_size={bottleneck_size!r}: expected an integer >= 1 (or null)"
            )
        if nonlinearity not in ACT2FN:
            raise ConfigError(f"method.nonlinearity={nonlinearity!r}: allowed {sorted(ACT2FN)}")
        if isinstance(init_std, bool) or not isinstance(init_std, int | float) or init_std <= 0:
            raise ConfigError(
                f"method.init_std={init_std!r}: expected a number > 0 (0 would make the adapter dead)"
            )
        if train_layernorm and not layernorm_modules:
            raise ConfigError("method.layernorm_modules: empty while method.train_layernorm=true")
        self.sites = list(sites)
        self.reduction_factor = reduction_factor
        self.bottleneck_size = bottleneck_size
        self.nonlinearity = nonlinearity
        self.init_std = float(init_std)
        self.train_layernorm = train_layernorm
        self.layernorm_modules = list(layernorm_modules or [])

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        for block in transformer_layers(model, context.layers_path):
            for site in self.sites:
                self._insert(block, site, context)
        if self.train_layernorm:
            norms = [p for n, p in model.named_parameters() if in_modules(n, self.layernorm_modules)]
            if not norms:
                raise ConfigError(
                    f"method.layernorm_modules={self.layernorm_modules}: match no module of the model"
                )
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
        bottleneck = self.bottleneck_size or int(hidden // self.reduction_factor)
        if bottleneck < 1:
            raise ConfigError(
                f"method.reduction_factor={self.reduction_factor}: leaves no bottleneck width for hidden size {hidden}"
            )
        reference = target.weight
        adapter = BottleneckAdapter(hidden, bottleneck, self.nonlinearity, self.init_std)
        adapter.to(device=reference.device, dtype=reference.dtype)
        parent_name, _, leaf = site.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        setattr(parent, leaf, AdaptedOutput(target, adapter))
