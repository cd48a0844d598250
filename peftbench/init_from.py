"""``init_from=``: start a run from the trained weights of an earlier run.

Paper recipes need it (the LoRA paper starts RTE, MRPC and STS-B from the MNLI-trained adapter; the
RoBERTa paper does the same for full fine-tuning) and it is useful on its own (continue training,
transfer between tasks). The source is found before any model loads, so a missing one is a config
error, not a failed run; the weights are loaded after the method has transformed the model, so
adapter weights land in the freshly injected adapter modules.

Spellings (top-level ``init_from`` key):

- ``init_from=3f2a9c01d4e5`` -- a run id, looked up in ``paths.results_dir`` (status ok);
- ``init_from=path/to/result.json`` or ``init_from=path/to/trainable.safetensors``;
- a mapping that *selects* the source run among the results, each key defaulting to this run's own
  value: ``{task: mnli}`` is "the MNLI run of this model, method, seed and study". Reproductions use
  this form, so one experiment config serves every seed.

Tensors load by name and shape. The task head (``model.head_modules``) is loaded only when the source
trained the same task (``include_head`` overrides that); a tensor whose shape differs (a 3-class head
into a 2-class task) is never loaded. What was loaded and skipped is recorded in the result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import Method
from peftbench.results import (
    WEIGHTS_FILE,
    ResultSchemaError,
    RunResult,
    find_ok_result,
    load_results,
    locate,
    read_result,
    skip_lines,
)

log = logging.getLogger("peftbench")
RUN_ID = re.compile(r"^[0-9a-f]{12}$")
SELECT_KEYS = ("task", "model", "method", "seed", "study")


@dataclass
class InitFromSpec:
    """The ``init_from`` mapping (a bare string is ``run``)."""

    run: str | None = None  # run id, result JSON or .safetensors file
    task: str | None = None  # select: the source run's task (default: this run's)
    model: str | None = None  # select: the source run's model (default: this run's)
    method: str | None = None  # select: the source run's method (default: this run's)
    seed: int | None = None  # select: the source run's seed (default: this run's)
    study: str | None = None  # select: the source run's study (default: this run's)
    results_dir: str | None = None  # where to look (default: paths.results_dir)
    include_head: bool | None = None  # load the task head too; None: only when the source task is this task


@dataclass
class InitSource:
    """A resolved source: the weights file and, when known, the run that wrote it."""

    weights_path: Path
    result: RunResult | None
    include_head: bool

    def record(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights_path),
            "run_id": self.result.run_id if self.result else None,
            "task": self.result.task if self.result else None,
            "method": self.result.method if self.result else None,
            "seed": self.result.seed if self.result else None,
            "include_head": self.include_head,
        }


def parse_spec(value: Any) -> InitFromSpec | None:
    """``init_from`` as a spec; None when unset. Unknown keys are a one-line ConfigError."""
    if value is None or value == "":
        return None
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str | int):
        return InitFromSpec(run=str(value))
    if not isinstance(value, dict):
        raise ConfigError(f"init_from={value!r}: expected a run id, a path or a mapping")
    allowed = list(InitFromSpec.__dataclass_fields__)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(
            f"init_from.{unknown[0]}={value[unknown[0]]!r}: unknown key; allowed: {', '.join(allowed)}"
        )
    if value.get("run") is not None and any(value.get(k) is not None for k in SELECT_KEYS):
        raise ConfigError("init_from: give either `run` or selection keys (task, model, ...), not both")
    return InitFromSpec(**value)


def _weights_of(result: RunResult) -> Path:
    recorded = result.provenance.get("trainable_weights")
    candidates = [locate(recorded)] if recorded else []  # recorded paths are portable (results.portable)
    if result.output_dir:
        candidates.append(locate(result.output_dir) / WEIGHTS_FILE)
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates) or "no output_dir recorded"
    raise ConfigError(
        f"init_from: run {result.run_id} ({result.task}/{result.method}/seed{result.seed}) has no trained "
        f"weights on disk ({where}); re-run it, or point init_from at a .safetensors file"
    )


def resolve(cfg: DictConfig) -> InitSource | None:
    """Find the source of ``cfg.init_from`` (before any model loads); None when unset."""
    spec = parse_spec(OmegaConf.select(cfg, "init_from", default=None))
    if spec is None:
        return None
    results_dir = Path(spec.results_dir or cfg.paths.results_dir)
    this_task = str(cfg.task.name)
    if spec.run is not None:
        path = Path(spec.run)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise ConfigError(f"init_from={spec.run}: no such file")
            include = bool(spec.include_head)  # unknown source task: the head only on request
            return InitSource(path, None, include)
        if path.suffix == ".json":
            if not path.is_file():
                raise ConfigError(f"init_from={spec.run}: no such file")
            try:
                result = read_result(path)
            except ResultSchemaError as error:
                raise ConfigError(f"init_from={spec.run}: {error}") from None
        elif RUN_ID.match(spec.run):
            result = find_ok_result(results_dir, spec.run)  # the lookup a resumed sweep uses
            if result is None:
                raise ConfigError(
                    f"init_from={spec.run}: no result with status ok and this run id in {results_dir}"
                )
        else:
            raise ConfigError(
                f"init_from={spec.run}: expected a 12-hex-digit run id, a result .json or a .safetensors file"
            )
    else:
        wanted = {
            "task": spec.task or this_task,
            "model": spec.model or str(cfg.model.name),
            "method": spec.method or str(cfg.method.name),
            "seed": int(spec.seed if spec.seed is not None else cfg.seed),
            "study": spec.study if spec.study is not None else cfg.get("study"),
        }
        results, skipped = load_results(results_dir)
        for line in skip_lines(skipped):  # a corrupt file is not a candidate, and not a crash either
            log.warning("%s", line)
        matches = [
            r
            for r in results
            if r.status == "ok"
            and r.variant == "default"
            and all(getattr(r, k) == v for k, v in wanted.items())
        ]
        described = " ".join(f"{k}={v}" for k, v in wanted.items())
        if not matches:
            raise ConfigError(
                f"init_from: no ok result with {described} in {results_dir}; run that job first "
                "(peftbench-reproduce runs the stages in order)"
            )
        if len({r.run_id for r in matches}) > 1:
            ids = ", ".join(sorted({r.run_id for r in matches}))
            raise ConfigError(f"init_from: several ok results with {described} ({ids}); name one by run id")
        result = matches[0]
    include = spec.include_head if spec.include_head is not None else result.task == this_task
    return InitSource(_weights_of(result), result, bool(include))


def _is_head(name: str, head_modules: list[str]) -> bool:
    return any(re.search(rf"(^|\.){re.escape(head)}(\.|$)", name) for head in head_modules)


def load_into(
    model: nn.Module, source: InitSource, head_modules: list[str], method: Method
) -> dict[str, Any]:
    """Copy the source's tensors into ``model`` by name and shape; return what was loaded and skipped.

    Names follow the method's own saved form (``Method.trainable_state_dict``; peft drops the adapter
    name), so both sides are compared in that form and loading goes through the method.
    """
    saved = load_file(str(source.weights_path))
    own = method.trainable_state_dict(model)
    loaded: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for name, tensor in saved.items():
        if name not in own:
            skipped[name] = "not trained by this run's method"
        elif not source.include_head and _is_head(name, head_modules):
            skipped[name] = "task head (source trained another task)"
        elif own[name].shape != tensor.shape:
            skipped[name] = f"shape {tuple(tensor.shape)} != {tuple(own[name].shape)}"
        else:
            loaded[name] = tensor.to(own[name].dtype)
    body_saved = [n for n in saved if not _is_head(n, head_modules)]
    body_loaded = [n for n in loaded if not _is_head(n, head_modules)]
    if not loaded or (body_saved and not body_loaded):  # a head alone is no start from that run
        reasons = sorted(
            {reason for name, reason in skipped.items() if name in body_saved} or set(skipped.values())
        )
        raise ConfigError(
            f"init_from: nothing in {source.weights_path} fits this model ({'; '.join(reasons) or 'empty file'}); "
            "was it trained with the same model and method?"
        )
    # Complete the state with this model's own values for what was skipped: loaders such as peft's expect
    # every trainable tensor (the head, say) and the skipped ones must keep their fresh initialisation.
    method.load_trainable_state_dict(model, {**{k: v.clone() for k, v in own.items()}, **loaded})
    entries = int(sum(t.numel() for t in loaded.values()))
    log.info(
        "init_from %s: loaded %d tensors (%d entries), skipped %d",
        source.weights_path,
        len(loaded),
        entries,
        len(skipped),
    )
    return {**source.record(), "loaded_tensors": len(loaded), "loaded_entries": entries, "skipped": skipped}
