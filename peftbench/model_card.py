"""What an exported folder says about itself: the base model it applies to and a filled model card.

An export is meant to be published (``peftbench-export``), so what it records must make sense on someone else's
machine: the base model is named by its Hugging Face hub id when one is known (``model.hub_id``, or
``model.name_or_path`` when that already is one), and a local source is spelled portably (``~/``, ``./``, or the
folder's name), never as this machine's absolute path. The model card (README.md, which the Hub renders) replaces
peft's empty template with what the run's result file knows: metrics, budget, method, citation, how to load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from peftbench.models.backbone import PKG_PREFIX, is_hub_id
from peftbench.resources import config_dir
from peftbench.results import RunResult, portable

# peft task types (task.peft_task_type) and the Hub's pipeline tag for their models.
PIPELINE_TAGS = {"SEQ_CLS": "text-classification", "CAUSAL_LM": "text-generation"}
# The transformers auto class that loads each kind of exported model.
AUTO_CLASSES = {"SEQ_CLS": "AutoModelForSequenceClassification", "CAUSAL_LM": "AutoModelForCausalLM"}
# Written where the reader puts the exported folder: the card cannot know (a Hub repo, a local folder).
THIS_FOLDER = "path/to/this-folder"


def hub_id(model_cfg: dict[str, Any]) -> str | None:
    """The base model's hub id, or None where it has none (a folder, a package, a random init).

    ``model.hub_id`` when set; else ``name_or_path`` when that has a hub id's shape and is no folder here. Results
    written before the knob existed lack the key: the model's own file (conf/model/<name>.yaml) supplies it when
    it names the same weights source, so committed runs export with the hub id too.
    """
    if model_cfg.get("hub_id"):
        return str(model_cfg["hub_id"])
    source = model_cfg.get("name_or_path")
    if source and is_hub_id(str(source)) and not Path(str(source)).is_dir():
        return str(source)
    if "hub_id" not in model_cfg:
        return _hub_id_from_model_file(str(model_cfg.get("name") or ""), source)
    return None


def _hub_id_from_model_file(name: str, source: Any) -> str | None:
    path = config_dir() / "model" / f"{name}.yaml"
    if not name or "/" in name or os.sep in name or not path.is_file():
        return None
    # A model file this code cannot read gives no hub id, not a failed export.
    with contextlib.suppress(Exception):
        own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(own, dict) and own.get("name_or_path") == source and own.get("hub_id"):
            return str(own["hub_id"])
    return None


def base_model_id(model_cfg: dict[str, Any]) -> str:
    """How an export names its base model: the hub id when known (:func:`hub_id`); else the source as written,
    made portable: ``pkg:<package>`` as is, a folder under home or the project as ``~/...`` or ``./...``, any
    other folder by its name alone (its absolute path means nothing on another machine); a random-init model
    (no source) by the model's name."""
    known = hub_id(model_cfg)
    if known:
        return known
    source = model_cfg.get("name_or_path")
    if not source:
        return str(model_cfg.get("name") or "unknown")
    source = str(source)
    if source.startswith(PKG_PREFIX):
        return source
    spelled = str(portable(source))
    return Path(spelled).name if Path(spelled).is_absolute() else spelled


def model_card(result: RunResult, base_model: str, library: str) -> str:
    """The README.md of an exported folder: YAML front matter the Hub reads, then the run's figures.

    ``library`` is what the folder holds: ``peft`` (an adapter folder), ``transformers`` (a merged model) or
    ``peftbench`` (the trained tensors of a method outside peft, which only peftbench loads).
    """
    config = result.config or {}
    task, model = config.get("task") or {}, config.get("model") or {}
    method = config.get("method") or {}
    peft_task_type = str(task.get("peft_task_type") or "")
    hub = hub_id(model)
    front: dict[str, Any] = {"library_name": library}
    if hub:  # the Hub reads base_model as a repo id: a local folder or package is none
        front["base_model"] = hub
    if peft_task_type in PIPELINE_TAGS:
        front["pipeline_tag"] = PIPELINE_TAGS[peft_task_type]
    front["tags"] = list(dict.fromkeys(["peftbench", result.method, result.task, *_library_tags(library)]))
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {result.method} on {result.task} ({result.model})",
        "",
        f"{_what(library, result.method)} for {_base_text(base_model, hub, model)}, trained by "
        f"peftbench on the `{result.task}` task ({_task_text(task)}).",
        "",
        *_results(result),
        *_training(result, config),
        *_loading(library, base_model, hub, peft_task_type, task.get("label_names") or []),
        *_limitations(model),
        "## Citation",
        "",
        f"The method: {_paper(method)}.",
        "",
    ]
    return str(portable("\n".join(lines)))


def write_model_card(folder: Path, result: RunResult, base_model: str, library: str) -> Path:
    """Write README.md in ``folder``, replacing whatever is there (peft's save_pretrained writes an empty
    template, which would otherwise be what the Hub shows)."""
    path = folder / "README.md"
    path.write_text(model_card(result, base_model, library))
    return path


def _library_tags(library: str) -> list[str]:
    return {"peft": ["peft", "adapter"], "transformers": ["transformers"]}.get(library, [])


def _what(library: str, method: str) -> str:
    if library == "peft":
        return f"A peft adapter ({method})"
    if library == "transformers":
        return f"A full model with the {method} update merged into the base weights"
    return f"The tensors the {method} method trained"


def _base_text(base_model: str, hub: str | None, model: dict[str, Any]) -> str:
    if hub:
        return f"[`{hub}`](https://huggingface.co/{hub})"
    if not model.get("name_or_path"):
        return f"`{base_model}` (a randomly initialised model built from a config, not on the Hub)"
    if base_model.startswith(PKG_PREFIX):
        return f"`{base_model}` (weights from a pip package, not on the Hub)"
    return f"`{base_model}` (a local folder, not on the Hub)"


def _task_text(task: dict[str, Any]) -> str:
    kind = str(task.get("type") or "classification")
    names = task.get("label_names") or []
    return f"{kind}; labels: {', '.join(map(str, names))}" if names else kind


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _results(result: RunResult) -> list[str]:
    selection = result.selection or {}
    chosen = selection.get("monitor")
    rule = selection.get("rule")
    lines = ["## Results", ""]
    if result.test:
        intro = "Test split"
        if chosen:
            intro += f", checkpoint chosen by `{chosen}`" + (f" ({rule})" if rule else "")
        lines += [f"{intro}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_number(value)} |" for name, value in sorted(result.test.items())]
    else:
        lines.append("The run recorded no test metrics.")
    if result.val_best:
        best = ", ".join(f"{name} {_number(value)}" for name, value in sorted(result.val_best.items()))
        lines += ["", f"Best validation: {best}."]
    return [*lines, ""]


def _training(result: RunResult, config: dict[str, Any]) -> list[str]:
    budget, efficiency = result.budget or {}, result.efficiency or {}
    task, optimizer = config.get("task") or {}, config.get("optimizer") or {}
    batch = budget.get("batch_size", task.get("batch_size"))
    steps = budget.get("steps", budget.get("max_steps", task.get("max_steps")))
    samples = budget.get("samples")
    rows = [("method", f"{result.method}")]
    trainable = efficiency.get("trainable_params")
    if trainable is not None:
        text = f"{int(trainable):,}"
        if efficiency.get("total_params"):
            text += f" of {int(efficiency['total_params']):,}"
        if efficiency.get("trainable_ratio_pct") is not None:
            text += f" ({float(efficiency['trainable_ratio_pct']):.3f} %)"
        rows.append(("trainable parameters", text))
    if optimizer.get("lr") is not None:
        rows.append(("learning rate", _learning_rate(optimizer)))
    budget_text = f"{steps} steps x batch {batch}"
    if samples is not None:
        budget_text += f" = {samples} samples"
    rows += [("budget", budget_text), ("seed", str(result.seed))]
    if result.precision:
        rows.append(("precision", str(result.precision)))
    rows.append(("run id", f"`{result.run_id}`"))
    if result.study:
        rows.append(("study", str(result.study)))
    version = ((result.provenance or {}).get("packages") or {}).get("peftbench")
    if version:
        rows.append(("peftbench", str(version)))
    table = ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]
    return ["## Training", "", *table, "", "The full configuration is in the run's result file.", ""]


def _learning_rate(optimizer: dict[str, Any]) -> str:
    """The configured lr, and the one the optimizer ran where a factor scales it (``optimizer.lr_factor``)."""
    lr, factor = optimizer["lr"], optimizer.get("lr_factor")
    if isinstance(factor, int | float) and factor != 1 and isinstance(lr, int | float):
        return f"{lr} x {factor} = {lr * factor:g}"
    return f"{lr}"


def _loading(
    library: str, base_model: str, hub: str | None, peft_task_type: str, label_names: list[Any]
) -> list[str]:
    auto = AUTO_CLASSES.get(peft_task_type, "AutoModel")
    labels = ""
    if label_names and auto == "AutoModelForSequenceClassification":
        labels = f", id2label={dict(enumerate(map(str, label_names)))!r}"
    base = hub or base_model
    lines = ["## How to load", "", "```python"]
    if library == "peft":
        lines += [
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'base = {auto}.from_pretrained("{base}"{labels})',
            f'model = PeftModel.from_pretrained(base, "{THIS_FOLDER}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{THIS_FOLDER}")',
        ]
    elif library == "transformers":
        lines += [f"from transformers import {auto}, AutoTokenizer", ""]
        lines += [
            f'model = {auto}.from_pretrained("{THIS_FOLDER}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{THIS_FOLDER}")',
        ]
        if peft_task_type in PIPELINE_TAGS:
            lines += [
                "",
                "from transformers import pipeline",
                "",
                f'pipe = pipeline("{PIPELINE_TAGS[peft_task_type]}", model="{THIS_FOLDER}")',
            ]
    else:
        lines += [
            "# The trained tensors fit the model peftbench builds for this method (base + method transform):",
            "from peftbench.export import rebuild",
            "",
            f'run = rebuild("<the run\'s result file>", weights="{THIS_FOLDER}/trainable.safetensors")',
            "model, tokenizer = run.model, run.tokenizer",
        ]
    lines += ["```", ""]
    if not hub:
        lines += [
            f"`{base_model}` is no Hub model: put the path of your copy of it in place of that name.",
            "",
        ]
    return lines


def _limitations(model: dict[str, Any]) -> list[str]:
    notes = []
    pooling = model.get("pooling")
    if pooling and pooling != "native":
        notes.append(
            f"The head read `{pooling}` pooling (peftbench's `model.pooling`), which replaces the backbone's "
            "pooler; plain transformers loads its native pooler instead, so scores differ outside peftbench."
        )
    if model.get("weights_note"):
        notes.append(f"Base weights: {model['weights_note']}.")
    return ["## Limitations", "", *(f"- {note}" for note in notes), ""] if notes else []


def _paper(method: dict[str, Any]) -> str:
    meta = method.get("meta") or {}
    return str(meta.get("paper") or method.get("paper") or "no paper recorded")
