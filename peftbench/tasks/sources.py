"""Raw data for a task: hub datasets, local files through datasets' builders, or generated data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset

from peftbench.errors import AssetMissingError, ConfigError
from peftbench.tasks.config import TaskConfig

FETCH_HINT = "run `peftbench-assets fetch` (or `make assets`) to fetch the offline corpora"
SPLITS = ("train", "validation", "test")


def load_source(task: TaskConfig) -> DatasetDict:
    """The source as a DatasetDict, before column checks and split carving."""
    options: dict[str, Any] = {k: v for k, v in task.source.items() if k != "kind"}
    kind = task.source["kind"]
    if kind == "synthetic":
        from hydra.utils import get_method

        # source.generator names the function (default: the sentiment-like generator); the rest are its arguments.
        generate = get_method(options.pop("generator", "peftbench.tasks.synthetic.generate"))
        return DatasetDict({"train": generate(**options)})
    if kind == "hub":
        path = options.pop("path")
        return load_dataset(path, options.pop("name", None), **options)
    # Local files: csv/json/parquet builders take `data_files` (one path or split -> path).
    data_files = options.pop("data_files")
    files = data_files.values() if isinstance(data_files, dict) else [data_files]
    for file in files:
        if not Path(file).is_file():
            hint = FETCH_HINT if options.pop("offline_asset", False) else "check task.source.data_files"
            raise AssetMissingError(f"task {task.name}: data file {file} does not exist; {hint}")
    options.pop("offline_asset", None)
    return load_dataset(kind, data_files=data_files, **options)


def prepare_splits(task: TaskConfig, raw: DatasetDict) -> DatasetDict:
    """Rename splits and columns to the canonical ones, map labels, carve missing splits (stratified)."""
    mapping = {split: task.splits.get(split, split) for split in SPLITS}
    available = set(raw)
    for split, source_split in mapping.items():
        if source_split is not None and source_split not in available:
            if split == "train":
                raise ConfigError(f"task.splits.train={source_split}: source has splits {sorted(available)}")
            mapping[split] = None  # carved below
    data = {split: raw[source] for split, source in mapping.items() if source is not None}
    data = {split: _canonical_columns(task, dataset, split) for split, dataset in data.items()}

    # Carve what the source lacks from train: test first, then validation, so the test split depends only
    # on split_seed and stays fixed across training seeds and validation ratios.
    for split in ("test", "validation"):
        if split in data:
            continue
        ratio = task.split_ratios.get(split)
        if ratio is None:
            raise ConfigError(f"task.split_ratios.{split}: missing; the source has no '{split}' split to map")
        stratify = "label" if task.type == "classification" else None
        parts = data["train"].train_test_split(
            test_size=ratio, seed=task.split_seed, stratify_by_column=stratify
        )
        data["train"], data[split] = parts["train"], parts["test"]
    return DatasetDict({split: data[split] for split in SPLITS})


def _canonical_columns(task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
    needed = {task.text_column: "text", task.label_column: "label"}
    if task.text_pair_column:
        needed[task.text_pair_column] = "text_pair"
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"task {task.name}: column {missing[0]!r} not in split {split!r} (columns: {dataset.column_names}); "
            f"set task.text_column / task.label_column"
        )
    dataset = dataset.select_columns(list(needed)).rename_columns(
        {src: dst for src, dst in needed.items() if src != dst}
    )
    if task.type == "regression":
        return dataset.cast_column("label", Value("float32"))
    if task.type == "generation":  # the label column holds the answer text
        return dataset.cast_column("label", Value("string"))
    if task.label_map is not None:
        label_map = {str(key): value for key, value in task.label_map.items()}
        unknown = sorted({str(v) for v in dataset.unique("label")} - set(label_map))
        if unknown:
            raise ConfigError(
                f"task.label_map: split {split!r} has labels {unknown} not in {sorted(label_map)}"
            )
        dataset = dataset.map(lambda row: {"label": label_map[str(row["label"])]}, desc="mapping labels")
    else:
        bad = sorted(
            v for v in dataset.unique("label") if not (isinstance(v, int) and 0 <= v < task.num_labels)
        )
        if bad:
            raise ConfigError(
                f"task {task.name}: labels {bad[:5]} in split {split!r} are outside 0..{task.num_labels - 1}; "
                "set task.label_map"
            )
    return dataset.cast_column("label", ClassLabel(names=task.label_names))
