"""Optional heavy packages a run imports only when it uses them.

peft imports bitsandbytes at import time whenever it is installed (``peft/helpers.py``); that costs about a
second of every start and, on a CPU machine, prints bitsandbytes' "Failed to load CPU gemm_4bit_forward"
warning, though only QLoRA-style runs (a quantised backbone, a bitsandbytes optimizer) use it. A ``None``
entry in ``sys.modules`` is Python's documented way to make an import fail as if the package were absent:
peft and transformers then treat it as not installed.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError

GATED = "bitsandbytes"
# Packages that look for bitsandbytes when they are first imported: once one of them is in, the gate is too late.
LOOKS_FOR_IT = ("peft", "transformers", GATED)


def needs_bitsandbytes(cfg: DictConfig) -> bool:
    """A run uses bitsandbytes when it loads a quantised backbone, quantises at init (LoftQ: ``init_lora_weights:
    loftq``), or names one of its classes anywhere (the QLoRA recipe's ``optimizer_class:
    bitsandbytes.optim.PagedAdamW``, an 8-bit optimizer)."""
    if OmegaConf.select(cfg, "model.quantization", default=None) is not None:
        return True
    if str(OmegaConf.select(cfg, "method.peft_config.init_lora_weights", default="")).lower() == "loftq":
        return True
    return any(GATED in text for text in _strings(OmegaConf.to_container(cfg, resolve=False)))


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return [node] if isinstance(node, str) else []


def gate_bitsandbytes(cfg: DictConfig, one_job_per_process: bool) -> None:
    """Keep bitsandbytes out of a process whose only run does not use it; refuse, in one line, a run that
    needs it in a process where an earlier run kept it out (the basic launcher runs jobs in one process)."""
    if needs_bitsandbytes(cfg):
        if GATED in sys.modules and sys.modules[GATED] is None:
            key = "model.quantization" if cfg.model.get("quantization") else "method"
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key) if key != 'method' else cfg.method.name}: needs bitsandbytes, "
                "which an earlier job of this process left unimported; run it with hydra/launcher=subprocess "
                "(the default: one process per job)"
            )
        return
    if one_job_per_process and not any(name in sys.modules for name in LOOKS_FOR_IT):
        sys.modules[GATED] = None  # type: ignore[assignment]


def keep_bitsandbytes_out() -> None:
    """For commands that only read or convert result files (they never quantise): peft, imported for its
    registry, would import bitsandbytes on every start (about a second, and a kernels warning on CPUs)."""
    if GATED not in sys.modules:
        sys.modules[GATED] = None  # type: ignore[assignment]
