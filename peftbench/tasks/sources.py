"""Raw data for a task: hub datasets, local files through datasets' builders, or generated data."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from peftbench import quiet
from peftbench.errors import AssetMissingError, ConfigError
from peftbench.tasks.config import TaskConfig

log = logging.getLogger("peftbench")
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
        try:
            return load_dataset(path, options.pop("name", None), **options)
        except (ConnectionError, FileNotFoundError, OSError) as error:  # offline or unknown id
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise AssetMissingError(
                f"task {task.name}: hub dataset {path} cannot be loaded ({reason}); offline, run the "
                "local stand-in with task.use_fixture=true or your own copy with task.path=FILE"
            ) from None
    # Local files: csv/json/parquet builders take `data_files` (one path or split -> path).
    data_files = options.pop("data_files", None)
    offline_asset = options.pop("offline_asset", False)
    if not data_files:
        raise ConfigError(
            f"task.path=null: task {task.name} reads a local file; set task.path=FILE "
            "(and task.text_column=..., task.label_column=..., task.label_names=[...])"
        )
    files = list(data_files.values()) if isinstance(data_files, dict) else [data_files]
    key = "task.path" if task.path else "task.source.data_files"
    for file in files:
        if Path(file).is_dir():
            raise ConfigError(f"{key}={file}: a folder, not a file; expected one {kind} file")
        if not Path(file).is_file():
            if offline_asset:
                raise AssetMissingError(f"task {task.name}: data file {file} does not exist; {FETCH_HINT}")
            raise ConfigError(f"{key}={file}: file does not exist")
    try:
        # A small file is read in seconds: no "Generating train split" bar for it (peftbench/quiet.py).
        with quiet.hidden_datasets_bars(file_bytes=sum(Path(file).stat().st_size for file in files)):
            loaded = load_dataset(kind, data_files=data_files, **options)
    except Exception as error:  # datasets wraps pandas', pyarrow's and json's errors: name the file
        reason = _reason(error)
        if "corresponds to no data" in reason:  # datasets' words for a file without a single row
            raise ConfigError(f"{key}={data_files}: has no rows (empty or header-only file)") from None
        for file in files:  # the parsers name a chunk's offset at best: find the file's line ourselves
            problem = locate_problem(str(file), kind, options)
            if problem is not None:
                where = f"{file}: " if len(files) > 1 else ""
                raise ConfigError(f"{key}={data_files}: {where}{problem}") from None
        raise ConfigError(f"{key}={data_files}: cannot be read as {kind} ({reason})") from None
    for split, dataset in loaded.items():
        if len(dataset) == 0:
            key = "task.path" if task.path else "task.source.data_files"
            raise ConfigError(f"{key}={data_files}: split {split!r} has no rows (empty or header-only file)")
    return loaded


def locate_problem(file: str, kind: str, options: dict[str, Any]) -> str | None:
    """The first line of a text data file that no parser can take, in the words an editor shows it: a line that
    is not in the file's encoding (UTF-8 unless ``source.encoding`` says otherwise), or, for csv, a row with more
    fields than the header. None when neither is found (then the parser's own message is all there is).
    Called only once loading failed, so a good file is never read twice."""
    if kind not in ("csv", "json"):
        return None  # parquet is binary: pyarrow's message is the only one
    encoding = options.get("encoding") or "utf-8"
    try:
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError as error:
                    column = len(raw[: error.start].decode(encoding, errors="replace")) + 1
                    return (
                        f"line {number} is not {_encoding_name(encoding)} (byte 0x{raw[error.start]:02x} at column "
                        f"{column}); save the file as {_encoding_name(encoding)}"
                    )
        if kind != "csv":
            return None
    except (OSError, LookupError):
        return None
    found = _first_row(file, options, lambda fields, header: fields > header)
    if found is None:
        return None
    line, fields, header = found
    delimiter = options.get("delimiter") or options.get("sep") or ","
    return (
        f"line {line} has {fields} fields, the header {header} (a ragged row; "
        f"quote a field that contains the delimiter {delimiter!r})"
    )


def short_row(file: str, options: dict[str, Any]) -> str | None:
    """The first csv row with fewer fields than the header, as ``line N has K field(s), the header H``: the csv
    builder reads it without complaint and fills the missing fields with nulls."""
    found = _first_row(file, options, lambda fields, header: 0 < fields < header)
    return None if found is None else f"line {found[0]} has {found[1]} field(s), the header {found[2]}"


def _first_row(
    file: str, options: dict[str, Any], wrong: Callable[[int, int], bool]
) -> tuple[int, int, int] | None:
    """``(line, fields, header fields)`` of the first csv row whose field count is ``wrong`` against the
    header's, read with the source's delimiter, quote and encoding; None when there is none, or when the file
    cannot be read this way (a regex separator: pandas' own reading is the only one)."""
    delimiter = options.get("delimiter") or options.get("sep") or ","
    quotechar = options.get("quotechar") or '"'
    if len(delimiter) != 1 or len(quotechar) != 1:
        return None
    try:
        with open(file, newline="", encoding=options.get("encoding") or "utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quotechar=quotechar)
            header = next(reader, [])
            for row in reader:
                if wrong(
                    len(row), len(header)
                ):  # reader.line_num: the row's last line (quoted fields span lines)
                    return reader.line_num, len(row), len(header)
    except (OSError, csv.Error, LookupError, UnicodeDecodeError):
        return None
    return None


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _reason(error: BaseException) -> str:
    """The innermost cause's first line: the parser's own words, which name the line or offset it stopped at."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def train_label_values(task: TaskConfig, raw: DatasetDict) -> list[Any]:
    """The distinct raw values of the label column in the source's train split (before any casting)."""
    split = task.splits.get("train", "train")
    if split not in raw:
        raise ConfigError(f"task.splits.train={split}: source has splits {sorted(raw)}")
    if task.label_column not in raw[split].column_names:
        raise ConfigError(
            f"task.label_column={task.label_column}: no such column in split {split!r}; "
            f"columns: {raw[split].column_names}"
        )
    return raw[split].unique(task.label_column)


def prepare_splits(task: TaskConfig, raw: DatasetDict) -> DatasetDict:
    """Rename splits and columns to the canonical ones, cast labels, carve missing splits (stratified where the
    task kind says so: classification keeps its class balance)."""
    roles = (*SPLITS, *task.extra_test_splits)
    mapping = {role: task.splits.get(role, role) for role in roles}
    available = set(raw)
    for role, source_split in mapping.items():
        if source_split is not None and source_split not in available:
            if role not in ("validation", "test"):  # train and extra reported splits must exist
                raise ConfigError(f"task.splits.{role}={source_split}: source has splits {sorted(available)}")
            log.warning(
                "task %s: source has no split %r for %s; carving it from train", task.name, source_split, role
            )
            mapping[role] = None  # carved below
    data = {role: raw[source] for role, source in mapping.items() if source is not None}
    data = {role: _canonical_columns(task, dataset, mapping[role]) for role, dataset in data.items()}

    # A paper's own rule (reproductions only): select on the reported split and train on all of train.
    if task.selection == "reported_split":
        data.pop("validation", None)
    # Carve what the source lacks from train: test first, then validation, so the test split depends only
    # on split_seed and stays fixed across training seeds and validation ratios.
    for role in ("test", "validation"):
        if role in data:
            continue
        if role == "validation" and task.selection == "reported_split":
            data["validation"] = data["test"]
            continue
        ratio = task.split_ratios.get(role)
        if ratio is None:
            raise ConfigError(f"task.split_ratios.{role}: missing; the source has no '{role}' split to map")
        try:
            parts = data["train"].train_test_split(
                test_size=ratio, seed=task.split_seed, stratify_by_column=task.kind.stratify_column
            )
        except ValueError as error:  # too few rows for the ratio, or for one row per class
            raise ConfigError(
                f"task.split_ratios.{role}={ratio}: cannot carve it from {len(data['train'])} training rows ({error})"
            ) from None
        data["train"], data[role] = parts["train"], parts["test"]
    splits = DatasetDict({role: data[role] for role in roles})
    task.kind.check_splits(task, splits)
    return splits


def _canonical_columns(task: TaskConfig, dataset: Dataset, split: str) -> Dataset:
    needed = {task.text_column: "text", task.label_column: "label"}
    if task.text_pair_column:
        needed[task.text_pair_column] = "text_pair"
    keys = {
        task.text_column: "text_column",
        task.label_column: "label_column",
        task.text_pair_column: "text_pair_column",
    }
    for column in needed:
        if column not in dataset.column_names:
            raise ConfigError(
                f"task.{keys[column]}={column}: no such column in split {split!r}; columns: {dataset.column_names}"
            )
    dataset = dataset.select_columns(list(needed)).rename_columns(
        {src: dst for src, dst in needed.items() if src != dst}
    )
    return task.kind.cast_labels(task, dataset, split)
