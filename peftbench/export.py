"""``peftbench-export``: turn a finished run into weights someone else can load.

A run leaves ``trainable.safetensors`` (the weights its method trains) beside its result file. This
command rebuilds the model the run trained (same config: base weights, method transform), puts the
trained weights back, and writes either

* the adapter alone (``--mode adapter``, default): for peft tuners a standard peft folder
  (``PeftModel.from_pretrained(base, folder)``); for other methods the trained tensors, or
* a full Hugging Face model folder with the method merged into the base weights (``--mode merged``),
  loadable with ``AutoModelForSequenceClassification.from_pretrained(folder)``; methods that cannot
  merge (soft prompts, injected adapter modules) stop with a one-line error.

Example: ``peftbench-export results/<run>.json --out exported/lora --mode merged``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench.errors import ConfigError
from peftbench.methods.base import Method
from peftbench.models.backbone import check_weights_source, load_tokenizer
from peftbench.results import WEIGHTS_FILE, ResultSchemaError, RunResult, localize, locate, read_result

if TYPE_CHECKING:
    from peftbench.assemble import RunParts


@dataclass
class RebuiltRun:
    """The model of a finished run, with its trained weights back in place."""

    result: RunResult
    method: Method
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase


def rebuild(result: RunResult | str | Path, weights: str | Path | None = None) -> RebuiltRun:
    """The model a finished run trained, built by the same code that built it for training
    (peftbench/assemble.py: base weights, causal-LM head for generation tasks, method transform), with its
    trained weights loaded back."""
    from peftbench import assemble  # the assembly path imports the whole loop: load it only when exporting

    if not isinstance(result, RunResult):
        try:
            result = read_result(result)
        except ResultSchemaError as error:  # truncated, not UTF-8, wrong types: one line, not a traceback
            raise ConfigError(f"{result}: {error}") from None
    if result.status != "ok":
        raise ConfigError(
            f"result {result.run_id}: status={result.status}; only finished runs can be exported"
        )
    weights = Path(weights) if weights else locate(result.output_dir or "") / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: the run's trained weights are missing (was its output folder moved?)"
        )
    run = assemble.parts(OmegaConf.create(localize(result.config)))  # stored paths are portable
    check_weights_source(run.model_cfg)  # a base model missing here: one line, not a hub lookup
    spec = assemble.model_spec(run)
    assemble.check_architecture(run, spec)
    tokenizer = load_tokenizer(run.model_cfg)
    model = assemble.load_transformed(run, spec, tokenizer, _train_batches(run, tokenizer, result.config))
    run.method.load_trainable_state_dict(model, load_file(str(weights)))
    model.eval()
    return RebuiltRun(result, run.method, model, tokenizer)


def _train_batches(
    run: RunParts, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any]
) -> Callable[[], Any]:
    """The run's training loader, built only if the method draws from it (EVA and CorDA inits redo their data
    pass, in the run's training order, so the rebuilt model has the ranks and base weights the run trained)."""
    from peftbench.tasks.datamodule import TaskDataModule

    @functools.cache
    def datamodule() -> TaskDataModule:
        built = TaskDataModule(run.task, tokenizer, seed=int(config.get("seed", 0)))
        built.setup()
        return built

    return lambda: datamodule().train_dataloader()


def export(
    result: RunResult | str | Path, out: str | Path, mode: str = "adapter", weights: str | Path | None = None
) -> Path:
    """Write the adapter (or the merged model) of a finished run into ``out``; returns ``out``."""
    if mode not in ("adapter", "merged"):
        raise ConfigError(f"--mode={mode}: allowed adapter, merged")
    run = rebuild(result, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "adapter":
        run.method.save_adapter(run.model, out)
    else:
        merged = run.method.merged_model(run.model)
        if merged is None:
            raise ConfigError(
                f"--mode=merged: method {run.method.name} cannot be merged into the base weights; use --mode adapter"
            )
        merged.save_pretrained(str(out))
    run.tokenizer.save_pretrained(str(out))
    info = {
        "run_id": run.result.run_id,
        "method": run.method.name,
        "mode": mode,
        "base_model": run.result.config["model"].get("name_or_path") or run.result.config["model"]["name"],
        "task": run.result.task,
        "label_names": run.result.config["task"].get("label_names"),
    }
    (out / "peftbench_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftbench-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="result JSON of a finished run (written under paths.results_dir)")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--mode", default="adapter", choices=["adapter", "merged"], help="what to write")
    parser.add_argument(
        "--weights", default=None, help=f"trained weights (default: <run output>/{WEIGHTS_FILE})"
    )
    args = parser.parse_args(argv)
    try:
        path = export(args.result, args.out, args.mode, args.weights)
    except (ConfigError, FileNotFoundError) as error:
        print(f"peftbench-export: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.mode} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
