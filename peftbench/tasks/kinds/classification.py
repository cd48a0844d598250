"""``task.type: classification``: one class per input, a new linear head, argmax predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value
from transformers import PreTrainedTokenizerBase

from peftbench.errors import ConfigError
from peftbench.tasks.kinds import KINDS, LogitsPredictor, Predictor, TaskKind

if TYPE_CHECKING:
    from peftbench.tasks.config import TaskConfig


# Source kinds read from the user's own file, whose classes can be inferred from it.
LOCAL_KINDS = ("csv", "json", "parquet")


@KINDS.register
class Classification(TaskKind):
    stratify_column = "label"  # carved splits keep the class balance

    def check_labels(self, task: TaskConfig) -> None:
        indices = sorted(task.label_map.values()) if task.label_map else []
        if not task.label_names and task.label_map and indices == list(range(len(indices))):
            # A one-to-one map names the classes: its raw values by their index (a many-to-one map needs names).
            by_index = sorted(task.label_map.items(), key=lambda item: item[1])
            task.label_names = [str(raw) for raw, _ in by_index]
        if not task.label_names:
            if task.source.get("kind") in LOCAL_KINDS:
                return  # your own file: the classes are read from its train split (infer_labels)
            raise ConfigError("task.label_names=[]: a classification task needs its class names")
        if task.num_labels is None:
            task.num_labels = len(task.label_names)
        if task.num_labels < 2 or len(task.label_names) != task.num_labels:
            raise ConfigError(
                f"task.label_names={task.label_names}: needs {task.num_labels} names (task.num_labels), at least 2"
            )
        if task.label_map is not None:
            bad = {
                k: v
                for k, v in task.label_map.items()
                if not (isinstance(v, int) and 0 <= v < task.num_labels)
            }
            if bad:
                raise ConfigError(
                    f"task.label_map={task.label_map}: values must be class indices 0..{task.num_labels - 1}"
                )

    def infer_labels(self, task: TaskConfig) -> dict[str, Any] | None:
        """A local file given without ``label_names`` or ``label_map``: its classes are the sorted unique values of
        the label column in the train split (numbers, and numeric strings, sort numerically), as HF's
        text-classification examples infer them. Returns the keys to record in the config, or None."""
        if task.label_names or task.label_map is not None or task.source.get("kind") not in LOCAL_KINDS:
            return None
        from peftbench.tasks.sources import load_source, train_label_values

        values = train_label_values(task, load_source(task))
        numeric = all(_is_number(v) for v in values)
        ordered = sorted(values, key=(lambda v: float(v)) if numeric else str)
        names = [str(v) for v in ordered]
        if len(names) < 2:
            raise ConfigError(
                f"task.label_column={task.label_column}: the train split holds only class {names}; a classifier "
                "needs at least 2"
            )
        task.label_names, task.num_labels = names, len(names)
        # Every raw value mapped to its index by the order above: read as names, a label "1" among ["1", "neg"] or
        # the strings ["1", "2", "10"] would also read as class index 1 (cast_labels accepts indices too).
        task.label_map = {v: i for i, v in enumerate(ordered)}
        return {"label_names": names, "num_labels": len(names), "label_map": task.label_map}

    def cast_labels(self, task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
        """Class indices as a ClassLabel column; raw labels may be indices, the label names, or mapped."""
        values = dataset.unique("label")
        if None in values:  # an empty field, or a row with fewer fields than the header (csv)
            files = (task.source or {}).get("data_files")
            if (task.source or {}).get("kind") == "csv" and isinstance(files, str):
                from peftbench.tasks.sources import short_row

                where = short_row(files, task.source)
                if where is not None:
                    raise ConfigError(f"task.path={files}: {where}; every row needs a {task.label_column}")
            row = dataset[dataset["label"].index(None)]
            text = next((str(v) for k, v in row.items() if k != "label" and v is not None), "")
            raise ConfigError(
                f"task.label_column={task.label_column}: a row in split {split!r} has no label (an empty field, "
                f"or fewer fields than the header); its text starts {text[:60]!r}"
            )
        is_index = [
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < task.num_labels for v in values
        ]
        if task.label_map is not None:
            label_map = {str(key): value for key, value in task.label_map.items()}
            allowed = f"task.label_map keys {sorted(label_map)}"
            unknown = sorted({str(v) for v in values} - set(label_map))
        else:
            # Raw labels are class indices, the label names, or both; anything else is named as it is.
            named = [str(v) in task.label_names for v in values]
            unknown = sorted(
                str(v) for v, index, name in zip(values, is_index, named, strict=True) if not (index or name)
            )
            allowed = f"class indices 0..{task.num_labels - 1} or task.label_names {task.label_names}"
            label_map = None
            if any(named) and not all(is_index):  # labels spelled as names (indices pass through)
                label_map = {name: index for index, name in enumerate(task.label_names)}
                label_map.update({str(index): index for index in range(task.num_labels)})
        if unknown:
            raise ConfigError(
                f"task.label_column={task.label_column}: value {unknown[0]!r} in split {split!r} is not a label; "
                f"allowed {allowed} (set task.label_map to map raw values)"
            )
        if label_map is not None:
            # The mapped column is declared integer: left to infer, datasets keeps a string column a string one
            # ("0", "1"), and ClassLabel then reads "1" as the class *named* "1" when there is one.
            features = dataset.features.copy()
            features["label"] = Value("int64")
            dataset = dataset.map(
                _map_labels,
                batched=True,
                fn_kwargs={"label_map": label_map},
                features=features,
                desc="mapping labels",
            )
        return dataset.cast_column("label", ClassLabel(names=task.label_names))

    def check_splits(self, task: TaskConfig, splits: DatasetDict) -> None:
        """A classifier trained on one class scores 1.0 on a test split of that class and learns nothing."""
        super().check_splits(task, splits)
        present = sorted(splits["train"].unique("label"))
        if len(present) < 2:
            names = [task.label_names[i] for i in present]
            raise ConfigError(
                f"task.label_column={task.label_column}: the train split holds only class {names}; a classifier "
                f"needs at least 2 of {task.label_names}"
            )

    def predictor(self, task: TaskConfig | None, tokenizer: PreTrainedTokenizerBase | None) -> Predictor:
        return LogitsPredictor(_argmax)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def _map_labels(batch: dict[str, list], label_map: dict[str, int]) -> dict[str, list]:
    return {"label": [label_map[str(value)] for value in batch["label"]]}
