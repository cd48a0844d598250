"""What a result records must be what the run did: the budget run, the data order, per-example predictions,
the validation curve, and costs that compare between methods (issue: results that don't mislead)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import peftbench.metrics.efficiency as efficiency_module
from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.results import (
    RunResult,
    config_fingerprint,
    fingerprint_config,
    read_result,
    seed_interpolations,
    write_result,
)
from peftbench.tasks.metrics import build_metrics
from peftbench.train import run


# --- one budget truth -------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [5, 0, -1])
def test_a_trainer_budget_apart_from_the_task_budget_is_a_config_error(
    steps: int, make_cfg, tmp_path
) -> None:
    cfg = make_cfg(f"trainer.max_steps={steps}")
    with pytest.raises(ConfigError, match=rf"trainer.max_steps={steps}: .*task.max_steps \(40\)"):
        run(cfg)
    assert not list((tmp_path / "results").glob("*.json")), "a config error is not a run"


def test_a_zero_step_task_budget_is_a_config_error(make_cfg) -> None:
    with pytest.raises(ConfigError, match="task.max_steps=0: must be >= 1"):
        run(make_cfg("task.max_steps=0"))


def test_the_result_records_the_steps_run(make_cfg) -> None:
    result = run(make_cfg("debug=smoke"))
    assert result.budget["steps"] == result.budget["max_steps"] == 4 == result.selection["global_steps"]


# --- seed-paired data order --------------------------------------------------------------------------------
class BatchRecorder(L.Callback):
    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.batches.append(batch["input_ids"].clone())


def _batches_seen(cfg) -> list[torch.Tensor]:
    prepared = prepare(cfg)
    recorder = BatchRecorder()
    prepared.trainer.callbacks.append(recorder)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    return recorder.batches


@pytest.mark.parametrize("grouped", [True, False])
def test_two_methods_at_one_seed_see_identical_batches(grouped: bool, make_cfg) -> None:
    # LoRA draws its A matrices from the global random state while head-only draws nothing: before the
    # sampler had its own generator, that shifted the data order between methods at the same seed.
    common = ("debug=smoke", "seed=1", f"task.group_by_length={str(grouped).lower()}")
    lora = _batches_seen(make_cfg("method=lora", *common))
    head_only = _batches_seen(make_cfg("method=head_only", *common))
    assert len(lora) == len(head_only) == 4
    assert all(torch.equal(a, b) for a, b in zip(lora, head_only, strict=True))
    other_seed = _batches_seen(make_cfg("method=lora", "debug=smoke", "seed=2", common[2]))
    assert not all(torch.equal(a, b) for a, b in zip(lora, other_seed, strict=True)), (
        "the seed sets the order"
    )


# --- per-example predictions and the curve ------------------------------------------------------------------
def test_predictions_are_stored_in_split_order_and_rescore_to_the_recorded_metric(make_cfg) -> None:
    cfg = make_cfg("task.max_steps=10", "task.val_every_n_steps=5")
    prepared = prepare(cfg)
    test_labels = list(prepared.datamodule.datasets["test"]["labels"])
    result = run(cfg)
    record = result.predictions["test"]
    assert set(record) == {"pred", "label"}, "a complete record needs no index"
    assert record["label"] == test_labels, "rows are in the split's own order, not the loader's length order"
    metrics = build_metrics({"accuracy": None, "mcc": None}, 2)
    scores = metrics(torch.tensor(record["pred"]), torch.tensor(record["label"]))
    assert float(scores["accuracy"]) == pytest.approx(result.test["test/accuracy"], abs=1e-6)
    assert 0 < float(scores["accuracy"]) < 1, "a degenerate test would not show the order matters"
    stored = json.loads(Path(result.provenance["result_path"]).read_text())
    assert stored["predictions"]["test"]["pred"] == record["pred"]


def test_a_partial_test_pass_says_so(make_cfg) -> None:
    result = run(make_cfg("debug=smoke", "task.eval_batch_size=16"))  # limit_test_batches=2: 32 of 64 rows
    record = result.predictions["test"]
    sizes = result.data["sizes"]["test"]
    assert len(record["pred"]) < sizes and record["partial"] is True
    assert record["index"] == sorted(record["index"]) and len(record["index"]) == len(record["pred"])


def test_the_curve_has_one_entry_per_validation_and_names_the_chosen_step(make_cfg) -> None:
    result = run(make_cfg("task.max_steps=20", "task.val_every_n_steps=5"))
    assert [entry["step"] for entry in result.curve] == [5, 10, 15, 20]
    for entry in result.curve:
        assert {"val/accuracy", "val/loss", "train/loss", "train_tokens_per_s"} <= set(entry)
        assert entry["train/loss"] > 0
    best = result.selection["best_step"]
    assert result.selection["best_checkpoint"].endswith(f"best-step{best}.ckpt")
    values = [entry["val/accuracy"] for entry in result.curve]
    assert values[[e["step"] for e in result.curve].index(best)] == max(values)


def test_equal_validation_scores_keep_the_first_checkpoint(make_cfg, monkeypatch) -> None:
    # A validation that only equals the best is no improvement: the checkpoint (and best_step) stay put.
    from peftbench.models.module import PeftBenchModule

    monkeypatch.setattr(PeftBenchModule, "on_validation_epoch_end", _constant_validation)
    result = run(make_cfg("task.max_steps=12", "task.val_every_n_steps=4"))
    assert [entry["val/accuracy"] for entry in result.curve] == [0.5, 0.5, 0.5]
    assert result.selection["best_step"] == 4 and result.selection["best_checkpoint"].endswith(
        "best-step4.ckpt"
    )
    assert result.val_best == {"val/accuracy": 0.5}


def _constant_validation(self) -> None:
    self.log("val/accuracy", 0.5)
    self.val_metrics.reset()


# --- costs that compare -------------------------------------------------------------------------------------
def test_soft_prompt_tokens_count_in_tokens_and_flops(make_cfg) -> None:
    common = ("debug=smoke", "seed=3", "inference.enabled=false")
    lora = run(make_cfg("method=lora", *common)).budget
    prompt = run(make_cfg("method=prompt_tuning", *common)).budget
    prefix = run(make_cfg("method=prefix_tuning", *common)).budget
    virtual = prompt["extra_tokens_per_sample"]
    assert virtual > 0 and prefix["extra_tokens_per_sample"] == 0  # a prefix is attended to, not processed
    # Same seed, same batches: the only difference in what was processed is the soft prompt.
    assert prompt["tokens_processed"] - lora["tokens_processed"] == virtual * lora["samples"]
    assert prompt["tokens"] - lora["tokens"] == virtual * lora["samples"]
    assert prefix["tokens_processed"] == lora["tokens_processed"]
    assert prompt["train_flops_est"] > prefix["train_flops_est"]


def test_peak_memory_is_labelled_and_given_over_the_loaded_model(make_cfg) -> None:
    eff = run(make_cfg("debug=smoke")).efficiency
    assert eff["peak_mem_kind"] == ("cuda_allocated" if torch.cuda.is_available() else "cpu_rss")
    assert eff["peak_mem_increment_mb"] == pytest.approx(eff["peak_mem_mb"] - eff["peak_mem_baseline_mb"])
    assert 0 <= eff["peak_mem_increment_mb"] < eff["peak_mem_mb"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001  # every read: one millisecond of "step"
        return self.now


def test_step_timing_leaves_out_validation_and_checkpoint_writes(make_cfg, monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(efficiency_module, "time", clock)
    save = ModelCheckpoint._save_checkpoint

    def slow_save(self, trainer, filepath):  # a checkpoint write that "takes" 1000 s
        clock.now += 1000.0
        save(self, trainer, filepath)

    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", slow_save)
    from peftbench.models.module import PeftBenchModule

    validation_step = PeftBenchModule.validation_step

    def slow_validation(self, batch, batch_idx):  # and a validation batch that "takes" 500 s
        clock.now += 500.0
        return validation_step(self, batch, batch_idx)

    monkeypatch.setattr(PeftBenchModule, "validation_step", slow_validation)
    result = run(
        make_cfg("task.max_steps=12", "task.val_every_n_steps=4", "callbacks.efficiency.warmup_steps=0")
    )
    assert result.selection["best_checkpoint"], "the run wrote checkpoints"
    eff = result.efficiency
    assert eff["timed_steps"] >= 9
    assert eff["train_step_time_ms"] < 100, "validation or a checkpoint write was timed as a training step"
    assert all(entry["train_tokens_per_s"] > 1000 for entry in result.curve)


# --- fingerprints: what a leaderboard row pools -------------------------------------------------------------
def _result(cfg, **fields: Any) -> RunResult:
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    return RunResult(
        run_id="x", task="t", model="m", method=config["method"]["name"], seed=int(cfg.seed), config=config,
        precision=str(cfg.trainer.precision), **fields,
    )  # fmt: skip


def test_fingerprints_pool_seeds_and_nothing_else(make_cfg) -> None:
    def fingerprint(*overrides: str) -> str:
        cfg = make_cfg(*overrides)
        return config_fingerprint(_result(cfg), seed_interpolations(cfg))

    base = fingerprint("seed=1")
    assert fingerprint("seed=2") == base
    assert fingerprint("seed=1", "callbacks.progress_bar.refresh_rate=1") == base  # presentation
    assert fingerprint("seed=1", "study=elsewhere") == base
    for other in (
        "method.peft_config.r=16",
        "optimizer.lr=1e-5",
        "trainer.precision=bf16-mixed",
        "task.max_steps=7",
    ):
        assert fingerprint("seed=1", other) != base, other
    # sparse's mask follows the seed (${seed}): seeds of one sparse configuration are one row
    assert fingerprint("method=sparse", "seed=1") == fingerprint("method=sparse", "seed=2")


def test_device_kind_and_data_order_are_part_of_the_fingerprint(make_cfg) -> None:
    cfg = make_cfg("seed=1")
    cpu = _result(cfg, provenance={"device": {"accelerator": "cpu"}})
    cuda = _result(cfg, provenance={"device": {"accelerator": "cuda", "cuda_device": "H200"}})
    assert config_fingerprint(cpu) != config_fingerprint(cuda)
    old = _result(cfg, provenance={"device": {}}, schema_version=2)  # the sampler drew from the global state
    assert config_fingerprint(old) != config_fingerprint(cpu)


def test_a_stored_config_fingerprints_the_same_on_any_machine(make_cfg, tmp_path) -> None:
    cfg = make_cfg("task=mr", "task.use_fixture=true", "seed=1")
    here = _result(cfg)
    moved = json.loads(
        json.dumps(here.config).replace(str(tmp_path), "/elsewhere/run").replace("/work/", "/home/someone/")
    )
    for key, value in list(moved["paths"].items()):  # another user's data and cache folders
        moved["paths"][key] = str(value).replace(str(Path.home()), "/home/someone")
    text = json.dumps(moved)
    for key, value in here.config["paths"].items():
        text = text.replace(str(value), str(moved["paths"][key]))
    there = RunResult(**{**here.to_dict(), "config": json.loads(text)})
    assert fingerprint_config(there.config) == fingerprint_config(here.config)
    assert config_fingerprint(there) == config_fingerprint(here)


def test_schema_3_fields_round_trip_and_older_files_still_read(tmp_path) -> None:
    result = RunResult(
        run_id="abc", task="t", model="m", method="lora", seed=1,
        predictions={"test": {"pred": [1, 0], "label": [1, 1]}}, curve=[{"step": 5, "val/accuracy": 0.5}],
        fingerprint="f" * 12,
    )  # fmt: skip
    back = read_result(write_result(result, tmp_path))
    assert back.predictions == result.predictions and back.curve == result.curve and back.schema_version == 3
    old = {k: v for k, v in result.to_dict().items() if k not in ("predictions", "curve", "fingerprint")}
    (tmp_path / "old.json").write_text(json.dumps({**old, "schema_version": 2}))
    legacy = read_result(tmp_path / "old.json")
    assert legacy.predictions == {} and legacy.curve == [] and legacy.fingerprint is None


def test_every_committed_result_reads(tmp_path) -> None:
    root = Path(__file__).resolve().parents[1] / "results"
    paths = list(itertools.islice(root.rglob("runs/*.json"), 200))
    assert paths
    for path in paths:
        read_result(path)
