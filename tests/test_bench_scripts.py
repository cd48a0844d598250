"""The benches' own logic (their figures are read, never asserted: tests do not time anything)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_profile_classes_ops_by_exact_aten_names() -> None:
    op_class = _load("step_profile").op_class
    assert op_class("aten::addmm").startswith("dense matmul")  # not element-wise aten::add
    assert op_class("aten::add_").startswith("element-wise")
    assert op_class("aten::to").startswith("dtype casts")  # not allocation's aten::t
    assert op_class("aten::copy_").startswith("dtype casts")
    assert op_class("aten::t").startswith("allocation")
    assert op_class("aten::tanh") == "other"
    assert op_class("aten::bernoulli_").startswith("dropout")
    assert op_class("aten::native_layer_norm_backward").startswith("activations")
    assert op_class("aten::linalg_vector_norm").startswith("optimizer")  # the clipping norm
    assert op_class("Optimizer.step#AdamW.step").startswith("optimizer")
    assert op_class("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__").startswith("data")


def test_anchors_wall_table_prices_each_part_against_the_steps() -> None:
    anchors = _load("anchors")
    record = {
        "runner": "peftbench",
        **{f"{part}_s": 0.0 for part in anchors.WALL_PARTS},
        "steps_s": 100.0,
        "validation_s": 10.0,
        "test_s": 5.0,
        "inference_s": 8.0,
        "setup_s": 1.0,
        "run_wall_s": 127.0,
        "process_wall_s": 140.0,
    }
    lines = anchors.wall_table([record, {"runner": "hand-fp32"}], "peftbench")
    text = "\n".join(lines)
    assert "| validation passes (and their checkpoint writes) | 10.0 | 0.100 |" in text
    assert "| the rest of the run (loop, callbacks, result file) | 3.0 | 0.030 |" in text  # 127 - 124
    assert "| interpreter and imports (outside the run) | 13.0 | 0.130 |" in text
    assert "**1.27**" in text and "| the process | 140.0 | 1.40 |" in text
    assert "the run spends 1.04× its steps" in text  # (127 - 10 - 5 - 8) / 100
    assert anchors.wall_table([{"runner": "hand-fp32"}], "peftbench") == []  # nothing to split


def test_gpu_bench_counts_model_flops_and_knows_each_gpus_peak() -> None:
    gpu = _load("gpu_mfu")
    # the weight matmuls (forward, input and weight gradients) plus attention's.
    assert (
        gpu.model_flops(1000, 10, layers=2, seq=8, hidden=4, tokens=5) == (4000 + 20) * 5 + 12 * 2 * 8 * 4 * 5
    )
    assert gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.datasheet_peak("NVIDIA H100 PCIe") == 756e12  # not the SXM part's figure
    assert gpu.datasheet_peak("NVIDIA H200") == 989e12
    assert gpu.datasheet_peak("Quadro P1000") is None


@pytest.mark.slow
def test_gpu_bench_runs_the_same_model_under_every_runner(tmp_path: Path) -> None:
    """The tiny shape on a CPU: each runner trains the same parameters on full-length rows (no figures read)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "bench" / "gpu_mfu.py"), "--shape", "tiny", "--steps", "5"]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    for method in ("lora", "full"):
        mine = [r for r in records if r["method"] == method]
        assert {r["runner"] for r in mine} == {"hand", "hf-trainer", "peftbench"}
        assert len({r["trainable"] for r in mine}) == 1  # one model, built three ways
        assert all(r["tokens_per_sample"] == 64 for r in mine)  # peftbench's rows fill the sequence too


def test_probe_fit_converges_and_its_penalty_shrinks_the_map() -> None:
    """Separable data: the unpenalised fit classifies every point; a heavy penalty shrinks the weights."""
    import torch

    probe = _load("probe")
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    loose, tight = probe.fit(x, y, 2, 1e-6), probe.fit(x, y, 2, 10.0)
    assert probe.accuracy(loose, x, y) == 1.0
    assert tight.weight.norm() < 0.2 * loose.weight.norm()


@pytest.mark.slow
def test_probe_reads_the_pooled_features_of_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    """tiny-bert on the synthetic task: features of every split, one chosen penalty, a test accuracy."""
    probe = _load("probe")
    assert probe.main(["model=tiny-bert", "task=synthetic"]) == 0
    out = capsys.readouterr().out
    assert "144 train / 48 val / 64 test, 32 features" in out  # the splits a run of that config trains on
    assert out.count("(chosen on val)") == 1 and "converged probe: test accuracy" in out


def test_throughput_summary_divides_by_the_reference_median() -> None:
    throughput = _load("throughput")
    rows = throughput.summarize({"full": [10.0, 30.0, 20.0], "lora": [40.0, 50.0, 60.0]}, "full")
    assert [(r["method"], r["median"], r["low"], r["high"], r["ratio"]) for r in rows] == [
        ("lora", 50.0, 40.0, 60.0, 2.5),
        ("full", 20.0, 10.0, 30.0, 1.0),
    ]
    assert all(r["ratio"] is None for r in throughput.summarize({"lora": [5.0]}, "full"))  # no reference run
    assert "lora" in throughput.stage_methods("compare/tuned/default")  # the stage's own sweep


def test_throughput_times_each_method_through_a_real_fit(tmp_path: Path) -> None:
    """Two methods and one that cannot compose: the two get a figure from the run's own efficiency monitor in
    every round, the third is reported as not measured instead of ending the bench."""
    import json

    throughput = _load("throughput")
    record = tmp_path / "tp.json"
    argv = ["--methods", "full,lora,no_such_method", "--steps", "3", "--warmup", "1", "--rounds", "2"]
    assert throughput.main([*argv, "--json", str(record), "model=tiny-bert", "task=synthetic"]) == 0
    saved = json.loads(record.read_text())
    assert {m: len(v) for m, v in saved["samples_per_s"].items()} == {
        "full": 2,
        "lora": 2,
        "no_such_method": 0,
    }
    assert all(x > 0 for v in saved["samples_per_s"].values() for x in v)
    assert [r["ratio"] for r in saved["summary"] if r["method"] == "full"] == [1.0]
    assert "no_such_method" in saved["not_measured"] and saved["precision"] in ("bf16-mixed", "32-true")
