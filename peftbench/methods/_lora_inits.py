"""LoRA initialisations that need more than the pretrained weights (helpers of the peft bridge, not a method).

- EVA (Paischer et al. 2024, arXiv:2410.07170) and CorDA (Yang et al. 2024, arXiv:2406.05223) need a pass over
  training batches: CorDA's covariance pass runs on the base model before peft injects (``preprocess_corda``),
  EVA's SVD of the layer inputs on the injected model (``initialize_lora_eva_weights``). Both read the batches from
  ``ModelContext.train_batches``, in the run's training order, with the global RNG forked so that the pass
  changes neither the data order nor the dropout masks training then draws.
- LoftQ (Li et al. 2023, arXiv:2310.08659): peft 0.21 computes its quantise-and-decompose loop on a CUDA or XPU
  device only (``peft/utils/loftq_utils.py``: ``compute_device = "xpu" if is_xpu_available() else "cuda"``).
  Without one, the same loop (bitsandbytes' NF4 / int8 quantiser, then the rank-r SVD of the residual) runs here
  where the weights are; with one, peft's own code runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from peft import PeftConfig
from torch import nn

from peftbench.errors import ConfigError

PEFT_PREFIX = "method.peft_config"
DATA_INITS = ("eva", "corda")  # inits that read training batches before training starts
# Inits a weightless (meta-device) dry run cannot perform: it injects plain LoRA to check the targets.
DRY_RUN_PLAIN = (*DATA_INITS, "loftq")
CORDA_SAMPLES = 256  # rows for CorDA's covariances: the default of peft's example (examples/corda_finetuning)


def init_name(peft_config: PeftConfig) -> str:
    """``init_lora_weights`` as a lower-case string ("true" for peft's default init, "" for non-LoRA tuners)."""
    return str(getattr(peft_config, "init_lora_weights", "")).lower()


def dry_run_config(peft_config: PeftConfig) -> PeftConfig:
    """The config a meta-device dry run injects: data- and quantisation-driven inits become plain LoRA (target
    matching is all the dry run checks, and those inits need real weights or data)."""
    if init_name(peft_config) not in DRY_RUN_PLAIN:
        return peft_config
    plain = copy.deepcopy(peft_config)
    plain.init_lora_weights = True
    plain.loftq_config, plain.eva_config, plain.corda_config = {}, None, None
    return plain


def training_batches(train_batches: Callable[[], Iterable[Any]] | None, init: str) -> Iterable[Any]:
    if train_batches is None:
        raise ConfigError(
            f"{PEFT_PREFIX}.init_lora_weights={init}: this init needs a pass over training batches, and the model "
            "was built without data (build the run with peftbench.assemble, which hands them to the method)"
        )
    return train_batches()


# --- EVA ----------------------------------------------------------------------------------------------------
def eva_init(model: nn.Module, batches: Iterable[Any]) -> None:
    """peft's EVA init on the injected model: incremental SVD of each target layer's inputs until the top
    components converge (``eva_config.tau``), ranks redistributed by explained variance (``eva_config.rho``)."""
    from peft import initialize_lora_eva_weights
    from peft.tuners.lora.eva import prepare_model_inputs_fn_language_modeling

    def token_mask(inputs: Mapping[str, torch.Tensor], config: Any) -> torch.Tensor:
        # peft masks tokens by label value (-100: prompt and padding of causal-LM batches). Classification labels
        # are one class per sequence, not per token: only the attention mask can select tokens there.
        labels = inputs.get("labels")
        if labels is not None and labels.shape != inputs["input_ids"].shape:
            inputs = {key: value for key, value in inputs.items() if key != "labels"}
        return prepare_model_inputs_fn_language_modeling(inputs, config)

    with torch.random.fork_rng():
        initialize_lora_eva_weights(
            model, batches, prepare_model_inputs_fn=token_mask, show_progress_bar=False
        )


# --- CorDA --------------------------------------------------------------------------------------------------
def corda_preprocess(model: nn.Module, peft_config: PeftConfig, batches: Iterable[Any], samples: int) -> None:
    """peft's CorDA preprocessing on the base model: each target layer's input covariance over ``samples``
    training rows, then the covariance-oriented SVD of its weight (``get_peft_model`` builds the adapter from it).

    peft's covariance hook takes one sequence per forward (it squeezes the batch axis), so rows run one at a time,
    each cut to its real tokens (padding would enter the covariance as rows of pad-token activations)."""
    from peft.tuners.lora.corda import preprocess_corda

    device = next(model.parameters()).device

    @torch.no_grad()
    def run_model() -> None:
        seen = 0
        for batch in batches:
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            for row in range(ids.shape[0]):
                keep = mask[row].bool() if mask is not None else torch.ones_like(ids[row], dtype=torch.bool)
                inputs = {
                    key: value[row, keep].unsqueeze(0).to(device)
                    for key, value in batch.items()
                    if key != "labels" and isinstance(value, torch.Tensor) and value.shape == ids.shape
                }
                model(**inputs)
                seen += 1
                if seen >= samples:
                    return

    with torch.random.fork_rng():
        preprocess_corda(model, peft_config, run_model=run_model)


# --- LoftQ --------------------------------------------------------------------------------------------------
def peft_runs_loftq() -> bool:
    """peft 0.21's LoftQ loop runs on CUDA or XPU only."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def without_loftq(peft_config: PeftConfig) -> PeftConfig:
    """The config to inject with when LoftQ runs here: plain LoRA factors, overwritten by ``loftq_init`` next.
    peft's own LoftQ example saves its adapters with init_lora_weights=True too, so loading never re-quantises."""
    plain = copy.deepcopy(peft_config)
    plain.init_lora_weights = True
    plain.loftq_config = {}
    return plain


@torch.no_grad()
def loftq_init(model: nn.Module, loftq_config: Mapping[str, Any]) -> None:
    """peft's LoftQ init (``loftq_init`` in peft/utils/loftq_utils.py and ``LoraLayer.loftq_init``), computed on
    the weights' own device: every target weight becomes its quantised (then dequantised) value Q, and the LoRA
    factors the rank-r SVD of W - Q, alternated ``loftq_iter`` times."""
    from peft.tuners.lora import LoraLayer

    bits, iterations = int(loftq_config["loftq_bits"]), int(loftq_config["loftq_iter"])
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or not module.lora_A:
            continue
        base = module.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise ConfigError(
                f"{PEFT_PREFIX}.init_lora_weights=loftq: {name} is a {type(base).__name__}; LoftQ without a "
                "CUDA/XPU device handles nn.Linear targets only"
            )
        for adapter in module.lora_A:
            quantised, lora_a, lora_b = _loftq(base.weight, bits, module.r[adapter], iterations)
            module.lora_A[adapter].weight.data = lora_a.to(module.lora_A[adapter].weight.dtype)
            module.lora_B[adapter].weight.data = lora_b.to(module.lora_B[adapter].weight.dtype)
        base.weight.data = quantised


def _loftq(weight: torch.Tensor, bits: int, rank: int, iterations: int) -> tuple[torch.Tensor, ...]:
    """(dequantised Q, A, B) with Q + B A ~= W: peft's loop, line for line, on ``weight.device``."""
    import bitsandbytes as bnb

    dtype, device = weight.dtype, weight.device
    weight = weight.detach().to(torch.float32)
    residual = weight.clone()
    for step in range(iterations):
        if bits == 4:
            quantised = bnb.nn.Params4bit(
                residual.cpu(), requires_grad=False, compress_statistics=False, quant_type="nf4"
            ).to(device)
            dequantised = bnb.functional.dequantize_4bit(quantised.data, quantised.quant_state)
        else:
            quantised = bnb.nn.Int8Params(residual.cpu(), requires_grad=False).to(device)
            dequantised = bnb.functional.int8_vectorwise_dequant(quantised.data, quantised.SCB)
        u, s, vh = torch.linalg.svd(weight - dequantised, full_matrices=False)
        root = s[:rank].sqrt()
        lora_b, lora_a = u[:, :rank] * root, root[:, None] * vh[:rank]
        if step + 1 < iterations:
            residual = weight - lora_b @ lora_a
    return dequantised.to(dtype), lora_a, lora_b
