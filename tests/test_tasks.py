"""Tasks as data: every task YAML runs offline on its fixture, splits are seeded, metrics are right.

Tasks are found by glob over conf/task/, so a new task YAML is tested without editing this file.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TASK_NAMES, compose_config
from datasets import ClassLabel
from omegaconf import OmegaConf

from peftbench.assemble import assemble as prepare
from peftbench.errors import AssetMissingError, ConfigError
from peftbench.models.backbone import ModelConfig, load_hf_config, load_model, load_tokenizer
from peftbench.models.module import NON_INPUT_KEYS
from peftbench.models.tiny import char_tokenizer
from peftbench.tasks import metrics as task_metrics
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.datamodule import TaskDataModule, tokenize_batch
from peftbench.tasks.generation import GENERATE_KEY
from peftbench.tasks.kinds import KINDS, task_kind
from peftbench.tasks.metrics import BUILTIN, build_metrics, monitor_mode, normalise_metrics
from peftbench.tasks.sources import load_source, prepare_splits
from peftbench.train import run

TINY_MAX_POSITIONS = 128  # conf/model/tiny-bert.yaml
# GLUE task -> (hub config, official headline metric, other official metrics)
GLUE = {
    "cola": ("cola", "mcc", []),
    "sst2": ("sst2", "accuracy", []),
    "mrpc": ("mrpc", "f1", ["accuracy"]),
    "qqp": ("qqp", "f1", ["accuracy"]),
    "stsb": ("stsb", "pearson", ["spearman"]),
    "mnli": ("mnli", "accuracy", []),
    "qnli": ("qnli", "accuracy", []),
    "rte": ("rte", "accuracy", []),
}


def fixture_overrides(name: str) -> list[str]:
    """Run task `name` offline on its fixture, within tiny-bert's position limit."""
    cfg = compose_config([f"task={name}"])
    overrides = [f"task={name}"]
    if task_kind(cfg.task.type).causal_lm:  # prompt -> answer needs a decoder
        overrides.append("model=tiny-llama")
    if cfg.task.get("fixture"):
        overrides.append("task.use_fixture=true")
    if cfg.task.max_length > TINY_MAX_POSITIONS:
        overrides.append(f"task.max_length={TINY_MAX_POSITIONS}")
    return overrides


def task_from(*overrides: str) -> TaskConfig:
    return TaskConfig.from_cfg(compose_config(overrides).task)


# --- every task, end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_runs_fast_dev_run_on_its_fixture(name: str, make_cfg) -> None:
    result = run(make_cfg(*fixture_overrides(name), "debug=fast_dev_run"))
    assert result.status == "ok"
    headline = result.config["task"]["headline"]
    assert f"test/{headline}" in result.test and f"test/{headline}" in result.test_last
    task = task_from(*fixture_overrides(name))
    for postfix in task.test_postfixes:  # MNLI: matched and mismatched both reported
        assert f"test/{headline}{postfix}" in result.test
    assert set(result.data["sizes"]) == {"train", "validation", "test", *task.extra_test_splits}


def test_glue_has_all_eight_with_hub_ids_and_official_metrics() -> None:
    assert set(GLUE) <= set(TASK_NAMES)
    for name, (config_name, headline, others) in GLUE.items():
        task = task_from(f"task={name}")
        assert task.source == {"kind": "hub", "path": "nyu-mll/glue", "name": config_name}
        assert task.headline == headline and set(others) <= set(task.metrics)
        # The convention: GLUE validation is reported; selection runs on a split carved from train.
        assert task.splits["test"].startswith("validation") and task.splits["validation"] is None
        assert task.monitor.startswith("val/") and task.split_ratios["validation"] > 0
        assert task.fixture, f"{name} has no offline fixture"
    mnli = task_from("task=mnli")
    assert mnli.splits["test"] == "validation_matched"
    assert mnli.splits["test_mismatched"] == "validation_mismatched"
    assert mnli.test_postfixes == ["", "_mismatched"]
    assert task_from("task=stsb").type == "regression"


# --- task kinds: what varies by task.type ------------------------------------------------------------
# What a kind's labels are cast to, where a kind is listed here (hand-checked; a new kind runs without an entry).
LABEL_FEATURES = {"classification": "ClassLabel", "regression": "float32", "generation": "string"}


@functools.cache
def first_task_of_each_type() -> dict[str, str]:
    """task.type -> the first task YAML of that type (by name): every kind is exercised by a real task."""
    found: dict[str, str] = {}
    for name in TASK_NAMES:
        found.setdefault(compose_config([f"task={name}"]).task.type, name)
    return found


@pytest.mark.parametrize("type_name", KINDS.names())
def test_every_task_kind_runs_its_behaviours(type_name: str) -> None:
    """Each behaviour a kind holds, called the way a run calls it, on the first task YAML of its type (found by
    glob, offline): config checks, label casting and stratification, tokenisation and collators, the model
    head, and predictions its metrics score."""
    name = first_task_of_each_type().get(type_name)
    assert name, f"no task YAML has task.type={type_name}: a kind needs one to be run"
    cfg = compose_config(fixture_overrides(name))
    task, model_cfg = TaskConfig.from_cfg(cfg.task), ModelConfig.from_cfg(cfg.model)
    kind = task.kind
    assert kind.name == task.type == type_name
    assert task.peft_task_type == kind.peft_task_type and task.num_labels >= 1
    kind.check_model(model_cfg)
    assert kind.head_modules(model_cfg.head_modules) == ([] if kind.causal_lm else model_cfg.head_modules)

    splits = prepare_splits(task, load_source(task))
    feature = splits["train"].features["label"]
    if type_name in LABEL_FEATURES:
        assert LABEL_FEATURES[type_name] == (
            type(feature).__name__ if isinstance(feature, ClassLabel) else feature.dtype
        )
    carved = [role for role in ("validation", "test") if task.splits.get(role, role) is None]
    if kind.stratify_column and carved:  # each class keeps its share in a carved split, to within a row
        column = kind.stratify_column
        pooled = [*splits["train"][column], *(v for role in carved for v in splits[role][column])]
        for role in carved:
            values = splits[role][column]
            for label in set(pooled):
                expected = len(values) * pooled.count(label) / len(pooled)
                assert abs(values.count(label) - expected) <= 1, (role, label)

    tokenizer = load_tokenizer(model_cfg)
    datamodule = TaskDataModule(task, tokenizer)
    datamodule.setup()
    train_batch = next(iter(datamodule.train_dataloader()))
    eval_batch = next(iter(datamodule.val_dataloader()))
    assert "labels" in train_batch and "example_index" in eval_batch and "example_index" not in train_batch
    assert (GENERATE_KEY in eval_batch) == kind.causal_lm and GENERATE_KEY not in train_batch

    hf_config = load_hf_config(model_cfg, task.num_labels, kind.problem_type)
    model, _ = load_model(model_cfg, hf_config, tokenizer.pad_token_id, auto_class=kind.auto_model_class)
    assert isinstance(model, kind.auto_model_class._model_mapping[type(hf_config)])
    model.eval()
    with torch.no_grad():
        output = model(**{k: v for k, v in eval_batch.items() if k not in NON_INPUT_KEYS})
        predicted, gold = kind.predictor(task, tokenizer)(model, eval_batch, output)
    assert torch.isfinite(output.loss)
    assert len(predicted) == len(gold) == len(eval_batch["labels"])
    if type_name == "classification":
        assert predicted.dtype == torch.long and int(predicted.max()) < task.num_labels
    if type_name == "regression":
        assert predicted.dtype == torch.float32 and hf_config.problem_type == "regression"
    if type_name == "generation":
        assert all(isinstance(answer, str) for answer in [*predicted, *gold])
    metrics = build_metrics(task.metrics, task.num_labels)
    metrics.update(predicted, gold)
    assert set(metrics.compute()) == set(task.metrics)


def test_an_unknown_task_type_names_the_kinds() -> None:
    with pytest.raises(
        ConfigError, match="task.type=ranking: allowed classification, generation, regression"
    ):
        task_from("task=synthetic", "task.type=ranking")


def test_a_kind_refuses_another_kinds_peft_task_type() -> None:
    with pytest.raises(ConfigError, match="task.peft_task_type=CAUSAL_LM: a classification task"):
        task_from("task=synthetic", "task.peft_task_type=CAUSAL_LM")


# --- splits ------------------------------------------------------------------------------------------
def _splits(*overrides: str) -> dict[str, list[str]]:
    task = task_from("task=mr", "task.use_fixture=true", *overrides)
    data = prepare_splits(task, load_source(task))
    return {split: sorted(data[split]["text"]) for split in data}


def test_carved_split_is_reproducible_by_split_seed_and_independent_of_seed() -> None:
    base = _splits()
    assert base == _splits()
    assert base == _splits("seed=7")  # the training seed never moves the test set
    other = _splits("task.split_seed=1")
    assert other["test"] != base["test"]
    assert {len(v) for v in other.values()} == {len(v) for v in base.values()}


def test_carved_split_is_stratified() -> None:
    task = task_from("task=mr", "task.use_fixture=true")
    data = prepare_splits(task, load_source(task))
    for split in ("train", "validation", "test"):
        labels = data[split]["label"]
        assert abs(labels.count(0) - labels.count(1)) <= 1, split  # the fixture is balanced


# --- metrics against hand-computed values ------------------------------------------------------------
def _score(
    names: list[str], preds: list, target: list, task_type: str = "classification"
) -> dict[str, float]:
    collection = build_metrics(normalise_metrics(names, task_type, 2), 2)
    collection.update(torch.tensor(preds), torch.tensor(target))
    return {k: float(v) for k, v in collection.compute().items()}


def test_classification_metrics_match_hand_computed_values() -> None:
    # TP=3 (rows 0, 1, 6), FP=2 (rows 2, 3), TN=2 (rows 4, 5), FN=1 (row 7).
    preds, target = [1, 1, 1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 1, 1]
    scores = _score(["accuracy", "f1", "precision", "recall", "f1_macro", "mcc"], preds, target)
    f1_positive, f1_negative = 2 * 3 / (2 * 3 + 2 + 1), 2 * 2 / (2 * 2 + 1 + 2)
    expected = {
        "accuracy": 5 / 8,
        "f1": f1_positive,
        "precision": 3 / 5,
        "recall": 3 / 4,
        "f1_macro": (f1_positive + f1_negative) / 2,
        "mcc": (3 * 2 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1)),
    }
    assert scores == pytest.approx(expected, abs=1e-6)


def test_correlation_metrics_match_hand_computed_values() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 9.0, 5.0, 4.0]
    scores = _score(["pearson", "spearman"], x, y, "regression")
    # Pearson: sum(dx*dy) = 1, sum(dx^2) = 5, sum(dy^2) = 26; Spearman: rank gaps (0, 2, 0, 2) -> 1 - 6*8/60.
    assert scores == pytest.approx({"pearson": 1 / math.sqrt(130), "spearman": 0.2}, abs=1e-6)


# --- metric directions and the checkpoint rule ---------------------------------------------------------
def test_every_builtin_metric_declares_its_direction() -> None:
    for name, builtin in BUILTIN.items():
        assert isinstance(builtin.higher_is_better, bool), name
        declared = type(builtin.build(2)).higher_is_better  # torchmetrics' own, where the class sets it
        assert declared in (None, builtin.higher_is_better), name
    assert not BUILTIN["mse"].higher_is_better and BUILTIN["pearson"].higher_is_better


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        (["task=synthetic"], "max"),
        (["task=synthetic", "task.monitor=val/loss"], "min"),
        (["task=stsb", "task.monitor=val/mse", "task.metrics=[mse,pearson]"], "min"),
        (["task=stsb"], "max"),
        (["task=arith", "model=tiny-llama"], "max"),
    ],
)
def test_monitor_mode_follows_the_monitored_metric(overrides: list[str], mode: str) -> None:
    cfg = compose_config(overrides)
    assert TaskConfig.from_cfg(cfg.task).monitor_mode == mode
    # The composed config carries the derived value: checkpointing reads it, and run ids keep their shape.
    assert cfg.task.monitor_mode == cfg.callbacks.model_checkpoint.mode == mode


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_yaml_derives_monitor_mode(name: str) -> None:
    """A task file that does not list _base/derived (directly or through a base) has no monitor_mode to give
    the checkpoint callback; one that still sets it must agree with its metric."""
    cfg = compose_config([f"task={name}"])
    assert OmegaConf.select(cfg, "task.monitor_mode") == TaskConfig.from_cfg(cfg.task).monitor_mode
    raw = (Path(__file__).parents[1] / "conf" / "task" / f"{name}.yaml").read_text()
    assert "\nmonitor_mode:" not in raw, f"{name}.yaml sets monitor_mode by hand; it follows task.monitor"


def test_a_contradicting_monitor_mode_is_refused_and_an_agreeing_one_kept() -> None:
    with pytest.raises(ConfigError) as error:
        task_from("task=synthetic", "task.monitor_mode=min")
    message = str(error.value)
    assert message.startswith("task.monitor_mode=min: val/accuracy is higher-is-better, so allowed max")
    assert "\n" not in message
    with pytest.raises(
        ConfigError, match="task.monitor_mode=max: val/loss is lower-is-better, so allowed min"
    ):
        task_from("task=synthetic", "task.monitor=val/loss", "task.monitor_mode=max")
    assert task_from("task=synthetic", "task.monitor_mode=max").monitor_mode == "max"  # older configs say it


def test_spec_metrics_take_their_direction_from_the_class_or_the_spec() -> None:
    mae = {"_target_": "torchmetrics.regression.MeanAbsoluteError"}  # the class says lower is better
    assert monitor_mode("val/mae", {"mae": mae}) == "min"
    assert monitor_mode("val/glue", {"glue": {"evaluate": "glue"}}) == "max"  # evaluate: higher unless stated
    assert monitor_mode("val/wer", {"wer": {"evaluate": "wer", "higher_is_better": False}}) == "min"
    with pytest.raises(ConfigError, match="task.metrics.mae.higher_is_better=True: .* allowed False"):
        monitor_mode("val/mae", {"mae": {**mae, "higher_is_better": True}})
    with pytest.raises(ConfigError, match="task.metrics.m.higher_is_better='yes': allowed true or false"):
        normalise_metrics({"m": {"evaluate": "x", "higher_is_better": "yes"}}, "classification", 2)
    # The direction is peftbench's: it is not handed to the metric's constructor.
    built = build_metrics({"mae": {**mae, "higher_is_better": False}}, 1)
    assert type(built["mae"]).__name__ == "MeanAbsoluteError"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        (
            "task.metrics=[accuracy,bleu]",
            "task.metrics=['accuracy', 'bleu']: unknown metric bleu; allowed accuracy",
        ),
        ("task.metrics=[pearson]", "task.metrics.pearson: a regression metric"),
    ],
)
def test_bad_metrics_fail_with_one_line(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        task_from("task=mr", override)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_macro_f1_accepts_three_classes() -> None:
    task = task_from("task=mr", "task.label_names=[a,b,c]")  # f1_macro, unlike binary f1, has no class limit
    assert task.num_labels == 3 and "f1_macro" in task.metrics


def test_binary_f1_refuses_three_classes() -> None:
    with pytest.raises(ConfigError, match="task.metrics.f1: binary"):
        task_from("task=mnli", "task.metrics=[f1]", "task.headline=f1")


def test_evaluate_metric_is_used_when_loadable(monkeypatch) -> None:
    class FakeAccuracy:  # what evaluate.load returns: compute(predictions, references) -> dict
        def compute(self, predictions: list, references: list) -> dict[str, float]:
            return {
                "accuracy": sum(p == r for p, r in zip(predictions, references, strict=True))
                / len(references)
            }

    monkeypatch.setattr(task_metrics, "_load_evaluate", lambda metric_id, config_name: FakeAccuracy())
    collection = build_metrics({"acc": {"evaluate": "accuracy", "key": "accuracy"}}, 2)
    val = collection.clone(prefix="val/")  # the module clones per split: the wrapper must survive a deepcopy
    val.update(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1]))
    assert float(val.compute()["val/acc"]) == pytest.approx(0.75)


def test_unloadable_evaluate_metric_stops_before_the_model_loads(make_cfg, monkeypatch) -> None:
    def offline(metric_id: str, config_name: str | None) -> None:
        raise FileNotFoundError(f"Couldn't find a module script at {metric_id}/{metric_id}.py.")

    monkeypatch.setattr(task_metrics, "_load_evaluate", offline)
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    cfg = make_cfg(
        *fixture_overrides("cola"),
        "~task.metrics",
        "+task.metrics={mcc: {evaluate: glue, config_name: cola}}",
    )
    with pytest.raises(ConfigError) as error:
        prepare(cfg)
    message = str(error.value)
    assert "task.metrics.mcc.evaluate='glue': cannot be loaded" in message and "no substitute" in message
    assert "\n" not in message


@pytest.mark.slow
def test_real_evaluate_offline_gives_the_one_line_error() -> None:
    task_metrics._load_evaluate.cache_clear()
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_metrics({"mcc": {"evaluate": "glue", "config_name": "cola"}}, 2)


# --- the generic csv task and bad input ------------------------------------------------------------------
def _write_csv(path: Path, rows: int = 30) -> Path:
    names = ["bad", "ok", "good"]
    lines = ["review,stars"] + [f"review number {i} was {names[i % 3]},{names[i % 3]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_task_runs_from_overrides_alone(make_cfg, tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "mine.csv")
    cfg = make_cfg(
        "task=csv",
        f"task.path={data}",
        "task.text_column=review",
        "task.label_column=stars",
        "task.label_names=[bad,ok,good]",
        "debug=fast_dev_run",
    )
    result = run(cfg)
    assert result.status == "ok" and "test/accuracy" in result.test
    assert sum(result.data["sizes"].values()) == 30
    assert result.config["task"]["path"] == str(data)


def test_path_shorthand_reads_jsonl_and_maps_labels(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"row {i}", "label": i % 2 * 2 - 1}) for i in range(20)))
    task = task_from("task=csv", f"task.path={data}", "task.label_map={-1:0,1:1}")
    assert task.source == {"kind": "json", "data_files": str(data)}
    splits = prepare_splits(task, load_source(task))
    assert set(splits["train"]["label"]) == {0, 1}


def _no_model_load(*args, **kwargs):
    raise AssertionError("the model loaded before the bad input was reported")


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        (["task.path=/nowhere/data.csv"], ConfigError, "task.path=/nowhere/data.csv: file does not exist"),
        (
            ["task.text_column=review"],
            ConfigError,
            "task.text_column=review: no such column in split 'train'",
        ),
        (["task.label_names=[neg,pos]"], ConfigError, "value 'negative' in split 'train' is not a label"),
        (["task.path=null"], ConfigError, "task.path=null: task csv reads a local file"),
    ],
)
def test_bad_csv_input_fails_with_one_line_before_the_model_loads(
    overrides: list[str], error: type, fragment: str, make_cfg, monkeypatch
) -> None:
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    fixture = str(Path(compose_config(["task=csv"]).task.fixture.source.data_files))
    cfg = make_cfg("task=csv", f"task.path={fixture}", *overrides)
    with pytest.raises(error) as raised:
        prepare(cfg)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_missing_corpus_names_the_fetch_command(make_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    with pytest.raises(AssetMissingError, match="peftbench-assets fetch"):
        prepare(make_cfg("task=mr", f"paths.data_dir={tmp_path}/empty", "model=tiny-bert"))


def test_unreachable_hub_dataset_points_to_the_fixture(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    with pytest.raises(AssetMissingError, match="task.use_fixture=true"):
        prepare(make_cfg("task=rte"))


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("task.truncation=middle", "task.truncation='middle'"),
        ("task.split_ratios={validation: 1.5}", "task.split_ratios.validation=1.5"),
        ("+task.splits.extra=validation", "task.splits.extra: allowed roles"),
        ("task.use_fixture=true", "task.use_fixture=true: task synthetic has no fixture"),
        ("task.path=data.xlsx", "task.path=data.xlsx: suffix allowed"),
    ],
)
def test_bad_task_values_fail_with_one_line(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        task_from("task=synthetic", override)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_sentence_pairs_refuse_tail_truncation() -> None:
    with pytest.raises(ConfigError, match="task.truncation=tail: sentence-pair tasks allow only head"):
        task_from("task=rte", "task.truncation=tail")


# --- the data pipeline -----------------------------------------------------------------------------
def test_truncation_keeps_head_tail_or_both() -> None:
    tokenizer = char_tokenizer()
    text = " ".join(str(i) for i in range(10))  # ten content tokens after pre-tokenisation
    full = tokenizer(text)["input_ids"]
    cls, content, sep = full[:1], full[1:-1], full[-1:]
    batch = {"text": [text, "0 1"]}

    def ids(truncation: str, fraction: float = 0.5) -> list[int]:
        return tokenize_batch(batch, tokenizer, 6, truncation, fraction)["input_ids"][0]

    assert ids("head") == cls + content[:4] + sep
    assert ids("tail") == cls + content[-4:] + sep
    assert ids("head+tail") == cls + content[:2] + content[-2:] + sep
    assert ids("head+tail", 0.25) == cls + content[:1] + content[-3:] + sep
    short = tokenize_batch(batch, tokenizer, 6, "head+tail")
    assert short["input_ids"][1] == tokenizer("0 1")["input_ids"]  # short inputs are untouched
    assert all(len(v) == len(short["input_ids"][0]) for v in (short["attention_mask"][0],))


def _datamodule(*overrides: str) -> TaskDataModule:
    task = task_from("task=csv", "task.use_fixture=true", *overrides)
    datamodule = TaskDataModule(task, char_tokenizer())
    datamodule.setup()
    return datamodule


def test_tokenisation_is_cached_across_runs() -> None:
    first = _datamodule()
    files = [f["filename"] for f in first.datasets["train"].cache_files]
    assert files, "a file-backed task must be tokenised into a cache file"
    stamps = {file: Path(file).stat().st_mtime_ns for file in files}
    second = _datamodule()  # a fresh tokenizer object, as in a new run
    assert [f["filename"] for f in second.datasets["train"].cache_files] == files
    assert {file: Path(file).stat().st_mtime_ns for file in files} == stamps, "the cache was rewritten"
    other = _datamodule("task.max_length=16")
    assert other.datasets["train"]._fingerprint != first.datasets["train"]._fingerprint


def test_eval_batches_are_length_sorted_and_cover_every_row() -> None:
    datamodule = _datamodule()
    loader = datamodule.val_dataloader()
    order = list(loader.sampler)
    assert sorted(order) == list(range(len(datamodule.datasets["validation"])))
    lengths = [len(datamodule.datasets["validation"][i]["input_ids"]) for i in order]
    assert lengths == sorted(lengths, reverse=True)
    widths = [batch["input_ids"].shape[1] for batch in loader]
    assert widths == sorted(widths, reverse=True)


def test_a_one_file_copy_of_a_glue_task_carves_validation_and_test() -> None:
    fixture = compose_config(["task=rte"]).task.fixture.source.data_files.train
    task = task_from("task=rte", f"task.path={fixture}", "task.split_ratios={validation: 0.25, test: 0.25}")
    sizes = {split: len(rows) for split, rows in prepare_splits(task, load_source(task)).items()}
    assert sizes == {"train": 13, "validation": 5, "test": 6}  # test first: 6 of 24; then 5 of 18
