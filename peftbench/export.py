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

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from peftbench import console
from peftbench.console import entry_point
from peftbench.errors import ConfigError
from peftbench.results import WEIGHTS_FILE, ResultSchemaError, RunResult, localize, locate, read_result

if TYPE_CHECKING:  # torch, transformers and the model code load when a run is rebuilt: --help stays instant
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from peftbench.assemble import RunParts
    from peftbench.methods.base import Method


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
    from safetensors.torch import load_file

    from peftbench import assemble  # the assembly path imports the whole loop: load it only when exporting
    from peftbench.models.backbone import check_weights_source, load_tokenizer

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
    """Write the adapter (or the merged model) of a finished run into ``out``, ready to publish; returns ``out``.

    Besides the weights: the base model named by its hub id where known (portable otherwise: never this machine's
    absolute path), the task's label names in the model config (pipelines say ``positive``, not ``LABEL_1``), and
    a model card (README.md) filled from the result file in place of peft's empty template."""
    if mode not in ("adapter", "merged"):
        raise ConfigError(f"--mode={mode}: allowed adapter, merged")
    if mode == "merged":
        if not isinstance(result, RunResult):
            try:
                result = read_result(result)
            except ResultSchemaError as error:
                raise ConfigError(f"{result}: {error}") from None
        pooling = (result.config.get("model") or {}).get("pooling") or "native"
        if pooling != "native":
            # A plain transformers classifier pools its own way (BERT: the pooler on [CLS]); a merged folder
            # would load that untrained pooler under a head trained on another representation and score wrongly.
            raise ConfigError(
                f"--mode=merged: the run's head read model.pooling={pooling}, which a plain transformers model "
                "config cannot express; export the adapter (--mode adapter) and load it through peftbench"
            )
    from peftbench.model_card import base_model_id, write_model_card

    run = rebuild(result, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = run.result.config["model"]
    base_model = base_model_id(model_cfg)
    label_names = run.result.config["task"].get("label_names")
    if mode == "adapter":
        _describe(run.model, base_model, label_names)
        run.method.save_adapter(run.model, out)
        _record_base_in_adapter_config(out, base_model)
        library = "peft" if (out / "adapter_config.json").is_file() else "peftbench"
    else:
        merged = run.method.merged_model(run.model)
        if merged is None:
            raise ConfigError(
                f"--mode=merged: method {run.method.name} cannot be merged into the base weights; use --mode adapter"
            )
        _describe(merged, base_model, label_names)
        merged.save_pretrained(str(out))
        library = "transformers"
    run.tokenizer.name_or_path = base_model  # tokenizer_config.json must not carry this machine's path either
    run.tokenizer.save_pretrained(str(out))
    info = {
        "run_id": run.result.run_id,
        "method": run.method.name,
        "mode": mode,
        "base_model": base_model,
        "task": run.result.task,
        "label_names": label_names,
    }
    (out / "peftbench_export.json").write_text(json.dumps(info, indent=2) + "\n")
    write_model_card(out, run.result, base_model, library)
    return out


def _describe(model: nn.Module, base_model: str, label_names: list[str] | None) -> None:
    """Put what a reader of the saved config.json needs into the model's config: the task's label names (by
    index, as the head was trained) and the portable base-model name in place of the local folder it loaded."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    config.name_or_path = base_model
    if label_names and len(label_names) == getattr(config, "num_labels", len(label_names)):
        config.id2label = {index: str(name) for index, name in enumerate(label_names)}
        config.label2id = {str(name): index for index, name in enumerate(label_names)}


def _record_base_in_adapter_config(folder: Path, base_model: str) -> None:
    """peft writes the folder the base loaded from (a pkg: package's site-packages path, or nothing for a
    random init) as ``base_model_name_or_path``; PeftModel.from_pretrained and the Hub read it as the base."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    adapter_config = json.loads(path.read_text())
    adapter_config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")


EXAMPLES = (
    "peftbench-train model=tiny-bert task=synthetic method=lora debug=smoke paths.results_dir=/tmp/pb-runs "
    "hydra.run.dir=/tmp/pb-run  # a finished run to export (4 steps, no assets)",
    'peftbench-export "$(ls /tmp/pb-runs/*.json | head -1)" --out /tmp/pb-adapter  # its LoRA adapter, a peft folder',
    'peftbench-export "$(ls /tmp/pb-runs/*.json | head -1)" --out /tmp/pb-merged --mode merged  # merged model',
)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = console.parser("peftbench-export", __doc__.split("\n\n")[0], EXAMPLES)
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
