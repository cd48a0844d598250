"""The one training loop: every method runs, freezes what it should, and writes a complete result."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import METHOD_NAMES, compose_config

import peftbench
import peftbench.results as results_module
from peftbench.assemble import assemble as prepare
from peftbench.results import RunResult, compute_run_id, read_result, write_result
from peftbench.train import run


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_fast_dev_run_every_method(name: str, make_cfg) -> None:
    result = run(make_cfg(f"method={name}", "debug=fast_dev_run"))
    assert result.status == "ok"
    assert "test/accuracy" in result.test
    assert result.efficiency["trainable_params"] > 0
    assert Path(result.provenance["result_path"]).is_file()


# tiny-bert is 32 wide: a Pfeiffer adapter there has 2 ReLU units, and in the last block only the [CLS]
# position reaches the classifier, so both units can sit dead on it and the down-projection bias never
# gets a gradient. Wider adapters keep the "every trainable tensor moves" check meaningful.
TEST_OVERRIDES = {"pfeiffer": ["method.reduction_factor=4"], "houlsby": ["method.reduction_factor=4"]}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_frozen_weights_stay_bit_identical_and_trainable_ones_move(name: str, make_cfg) -> None:
    cfg = make_cfg(
        f"method={name}",
        "debug=smoke",
        "optimizer.lr=1e-2",
        "callbacks.model_checkpoint=null",
        *TEST_OVERRIDES.get(name, []),
    )
    prepared = prepare(cfg)
    model = prepared.module.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} trains nothing"
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    after = dict(model.named_parameters())
    frozen_moved = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert not frozen_moved, f"frozen parameters changed: {frozen_moved[:5]}"
    unchanged = [n for n in trainable if torch.equal(before[n], after[n])]
    # Zero-initialised factors (LoRA's B) only move once the other factor's gradient reaches them;
    # every trainable tensor must still have moved after four steps at a large learning rate.
    assert not unchanged, f"trainable parameters that never moved: {unchanged[:5]}"


def test_lora_trainable_count_matches_formula(make_cfg) -> None:
    cfg = make_cfg("method=lora", "debug=fast_dev_run")
    prepared = prepare(cfg)
    hidden, layers, labels = 32, 2, 2
    r = cfg.method.peft_config.r
    targets = len(cfg.method.peft_config.target_modules)  # query, value: square hidden x hidden
    lora = layers * targets * (r * hidden + hidden * r)
    head = hidden * labels + labels  # classifier weight + bias
    count = prepared.method.trainable_parameter_count(prepared.module.model)
    assert count == lora + head


def test_head_only_trains_exactly_the_head(make_cfg) -> None:
    prepared = prepare(make_cfg("method=head_only", "debug=fast_dev_run"))
    trainable = [n for n, p in prepared.module.model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == ["classifier.bias", "classifier.weight"]


def test_result_round_trips_and_run_id_is_stable(tmp_path: Path) -> None:
    cfg_a = compose_config(["method=lora", "debug=smoke"], tmp_path / "a")
    cfg_b = compose_config(["method=lora", "debug=smoke"], tmp_path / "b")  # other output folders, same run
    assert compute_run_id(cfg_a) == compute_run_id(cfg_b)
    seed_7 = compose_config(["method=lora", "debug=smoke", "seed=7"], tmp_path / "a")
    assert compute_run_id(cfg_a) != compute_run_id(seed_7)
    result = run(compose_config(["method=lora", "debug=smoke"], tmp_path))
    assert result.run_id == compute_run_id(cfg_a)
    loaded = read_result(result.provenance["result_path"])
    assert loaded.to_dict() == json.loads(json.dumps(loaded.to_dict()))
    assert loaded.run_id == result.run_id and loaded.status == "ok"
    assert loaded.test and loaded.test_last and loaded.val_best
    for key in (
        "trainable_params",
        "total_params",
        "trainable_ratio_pct",
        "peak_mem_mb",
        "train_samples_per_s",
        "train_tokens_per_s",
        "train_time_s",
        "trainable_disk_mb",
    ):
        assert key in loaded.efficiency, key
    assert loaded.provenance["packages"]["torch"]
    assert loaded.config["method"]["name"] == "lora"
    assert loaded.precision == "32-true"


def test_run_id_does_not_depend_on_where_the_checkout_lies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep resumed from another clone must find its finished points: package paths are masked."""
    cfg = compose_config(["task=mr", "method=lora"])
    package = str(Path(peftbench.__file__).resolve().parent)
    assert cfg.task.fixture.source.data_files.startswith(package)  # the fixture resolves inside the package
    original_id, moved = compute_run_id(cfg), copy.deepcopy(cfg)
    moved.task.fixture.source.data_files = cfg.task.fixture.source.data_files.replace(
        package, "/elsewhere/peftbench"
    )
    monkeypatch.setattr(results_module, "PACKAGE_DIR", Path("/elsewhere/peftbench"))
    assert compute_run_id(moved) == original_id


def test_write_is_atomic(tmp_path: Path, monkeypatch) -> None:
    """The failure strikes after the new text is complete in the temporary file, at the rename: the old file
    must be untouched and the temporary one gone (it used to be injected before the temporary file existed)."""
    folder = tmp_path / "results"
    result = RunResult(run_id="abc", task="t", model="m", method="x", seed=0)
    path = write_result(result, folder)
    temporary: list[Path] = []

    def broken_replace(source, target):
        temporary.append(Path(source))
        assert Path(source).read_text().startswith("{")  # the new text was written in full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("peftbench.results.os.replace", broken_replace)
    monkeypatch.setattr("peftbench.results.tempfile.tempdir", str(tmp_path / "tmp"))
    with pytest.raises(OSError, match="No space left"):
        write_result(
            RunResult(run_id="abc", task="t", model="m", method="x", seed=0, status="failed"), folder
        )
    assert temporary and temporary[0].parent == folder
    assert read_result(path).status == "ok"  # the old complete file is untouched
    assert [p.name for p in folder.iterdir()] == [path.name]  # and no partial file is left


def test_crashing_run_leaves_a_failed_result(make_cfg, monkeypatch, tmp_path: Path) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr("lightning.pytorch.Trainer.fit", explode)
    cfg = make_cfg("method=lora", "debug=smoke")
    with pytest.raises(RuntimeError, match="injected"):
        run(cfg)
    (path,) = Path(cfg.paths.results_dir).glob("*.json")
    result = read_result(path)
    assert result.status == "failed" and "injected failure" in result.error


@pytest.mark.slow  # the default suite's sweep test (tests/test_sweeps.py, the killed job) asserts the same
def test_multirun_writes_one_result_per_job_with_its_own_peak(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "peftbench.train",
        "-m",
        "method=full,head_only",
        "model=tiny-bert",
        "task=synthetic",
        "logger=none",
        "debug=smoke",
        f"paths.results_dir={tmp_path}/results",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted((read_result(p) for p in (tmp_path / "results").glob("*.json")), key=lambda r: r.method)
    assert [r.method for r in results] == ["full", "head_only"]
    for result in results:
        assert result.status == "ok" and result.sweep_dir == str((tmp_path / "sweep").resolve())
        assert result.efficiency["peak_mem_source"] == "vmhwm"
        assert result.efficiency["peak_mem_mb"] > 0
    assert "| row " in done.stdout and "| head_only" in done.stdout  # the end-of-sweep comparison table


def test_the_best_checkpoint_at_the_last_step_is_tested_once(make_cfg, monkeypatch) -> None:
    """One validation, at the last step: the best checkpoint is the last weights, so one test pass serves both
    (it used to test the same weights twice)."""
    from peftbench import train

    calls = []
    real = train._test

    def counted(*args, **kwargs):
        calls.append(kwargs.get("ckpt_path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_test", counted)
    result = run(make_cfg("method=head_only", "task.max_steps=4", "task.val_every_n_steps=4"))
    assert result.selection["best_step"] == result.selection["global_steps"] == 4
    assert result.selection["chosen"] == "best" and result.selection["best_checkpoint"]
    assert calls == [None] and result.test == result.test_last


def test_a_run_says_where_its_wall_time_went(make_cfg, monkeypatch) -> None:
    """The wall-time parts (load and transform, data, steps, validation, test, inference) are each attributed
    to their own phase and never add up to more than the whole: what bench/anchors.py reads to price a run's
    fixed cost against its training steps."""
    import time as clock

    from peftbench import train

    real_test, real_assemble = train._test, train.assemble.assemble

    def slow_test(*args, **kwargs):
        clock.sleep(0.3)
        return real_test(*args, **kwargs)

    def slow_assemble(*args, **kwargs):
        clock.sleep(0.2)
        return real_assemble(*args, **kwargs)

    monkeypatch.setattr(train, "_test", slow_test)
    monkeypatch.setattr(train.assemble, "assemble", slow_assemble)
    result = run(make_cfg("method=lora", "task.max_steps=8", "task.val_every_n_steps=4"))
    eff = result.efficiency
    parts = (
        "time_setup_s",
        "time_data_s",
        "time_steps_s",
        "time_validation_s",
        "time_test_s",
        "time_inference_s",
    )
    assert all(eff[key] >= 0 for key in parts), {key: eff.get(key) for key in parts}
    assert sum(eff[key] for key in parts) <= result.budget["wall_time_s"]
    # Each sleep lands in its own phase (lower bounds: a sleep never takes less than asked); counted once, or
    # the parts would exceed the wall time above.
    assert eff["time_test_s"] >= 0.3 and eff["time_setup_s"] >= 0.2
    assert eff["time_validation_s"] > 0  # the sanity check and the validations at steps 4 and 8
    assert eff["time_inference_s"] > 0  # inference timing is on by default

    no_inference = run(make_cfg("method=lora", "task.max_steps=8", "inference.enabled=false", "seed=3"))
    assert "time_inference_s" not in no_inference.efficiency  # not run: not a zero-second measurement
