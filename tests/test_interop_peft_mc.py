"""HF peft's method comparison (peft-mc): its result files read as marked leaderboard rows, ours written in
its schema and read back, and a malformed file of theirs skipped with one line.

The fixture (tests/fixtures/peft_mc/MetaMathQA/results/) is written by hand from the schema their README and
``log_results`` document; its numbers are made up for the test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_result

from peftbench import leaderboard as lb
from peftbench import results_cli
from peftbench.interop import peft_mc
from peftbench.results import RunResult, scan_results, write_result

FIXTURE = Path(__file__).parent / "fixtures" / "peft_mc"
FILE = FIXTURE / "MetaMathQA" / "results" / "lora--llama-3.2-3B-rank32.json"


def _theirs(tmp_path: Path, **changes: object) -> dict:
    """The fixture's JSON, with ``changes`` ("block.key": value) applied."""
    data = json.loads(FILE.read_text())
    for dotted, value in changes.items():
        block, key = dotted.split(".", 1)
        data[block][key] = value
    return data


def _ours(seed: int = 1, score: float = 0.81) -> RunResult:
    """One of our runs, with the parts the export maps (a peft method config, a curve, a CUDA peak)."""
    result = run_result("lora", seed, score, task="sst2", model="roberta-base")
    result.test = {"test/loss": 0.4, "test/accuracy": score}  # loss first: the headline must still lead
    result.config = {
        "task": {"headline": "accuracy", "monitor": "val/accuracy", "max_length": 128, "batch_size": 16},
        "model": {"name": "roberta-base", "name_or_path": "FacebookAI/roberta-base"},
        "method": {"name": "lora", "peft_config": {"_target_": "peft.LoraConfig", "r": 8}},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 5e-4},
        "trainer": {"precision": "bf16-mixed", "max_steps": 40},
    }
    result.efficiency.update(
        total_params=10_000, peak_cuda_reserved_mb=2048.0, peak_mem_kind="cuda_allocated"
    )
    result.curve = [{"step": 20, "val/accuracy": 0.7, "train/loss": 0.5, "train_tokens_per_s": 900.0}]
    result.reference = {"ref/lm_loss_delta": 0.02}
    return result


def test_a_peft_mc_file_is_a_marked_row_beside_ours(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs / "peft_mc")
    write_result(run_result("lora", 1, 0.7), runs / "ours")
    loaded, skipped = scan_results(runs, foreign=True)
    assert skipped == [] and len(loaded) == 2
    theirs = next(r for _, r in loaded if r.study == peft_mc.SOURCE)
    assert (theirs.task, theirs.model, theirs.method, theirs.seed) == (
        "MetaMathQA",
        "meta-llama/Llama-3.2-3B",
        "lora",
        0,
    )
    assert theirs.test == {"test/accuracy": 0.48} and theirs.val_best == {"val/accuracy": 0.46}
    assert theirs.reference == {"ref/lm_loss_delta": 0.05} and theirs.selection["rule"] == "final_weights"
    assert [p["step"] for p in theirs.curve] == [2500, 5000]
    assert theirs.curve[1]["train_tokens_per_s"] == 5200.0
    assert theirs.predictions == {} and theirs.data == {}  # what they do not record stays empty

    assert lb.main([str(runs)]) == 0
    printed = capsys.readouterr()
    assert "skipped" not in printed.err
    assert "### MetaMathQA · meta-llama/Llama-3.2-3B · 5000 steps x 4" in printed.out
    assert "lora/llama-3.2-3B-rank32 (peft-mc)" in printed.out
    board = lb.build([r for _, r in loaded])
    row = next(r for r in board.rows if r.task == "MetaMathQA")
    numbers = row.numbers()
    assert row.label == "lora/llama-3.2-3B-rank32 (peft-mc)" and row.metric == "accuracy"
    assert numbers["mean"] == 0.48 and numbers["n"] == 1 and row.seed_only  # one seed, no predictions
    assert numbers["trainable_params"] == 9175040
    assert numbers["trainable_pct"] == pytest.approx(100 * 9175040 / 3221924864)
    assert numbers["peak_mem_kind"] == "cuda_reserved" and numbers["peak_mem_mb"] == 20971520000 / 2**20
    assert numbers["peak_mem_increment_mb"] is None  # their baseline is before loading: no increment
    assert numbers["samples_per_s"] == 20000 / 1000.0 and numbers["train_time_s"] == 1000.0
    assert numbers["tokens"] == 4000000 and numbers["train_flops_est"] is None
    ours = next(r for r in board.rows if r.task == "synthetic")
    assert "peft-mc" not in ours.label


def test_only_the_leaderboard_reads_foreign_files_and_unknown_files_stay_skipped(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "runs")
    (tmp_path / "runs" / "notes.json").write_text('{"author": "someone"}')
    loaded, skipped = scan_results(tmp_path / "runs")  # resume, init_from, portable: ours only, as before
    assert loaded == [] and len(skipped) == 2
    loaded, skipped = scan_results(tmp_path / "runs", foreign=True)
    assert len(loaded) == 1
    assert [(p.name, reason) for p, reason in skipped] == [
        ("notes.json", "not a peftbench result (no schema_version)")
    ]


def test_a_file_outside_their_layout_takes_its_folder_as_task_and_old_memory_keys_read(
    tmp_path: Path,
) -> None:
    data = _theirs(tmp_path)
    data["train_info"]["cuda_memory_max"] = data["train_info"].pop("accelerator_memory_max")  # before 2025-07
    path = tmp_path / "copied" / "lora.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    result = peft_mc.from_peft_mc(data, path)
    assert result.task == "copied" and result.efficiency["peak_mem_mb"] == 20000.0


def test_ours_to_peft_mc_and_back_keeps_headline_trainable_and_method(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    originals = [_ours(1, 0.81), _ours(2, 0.83)]
    for result in originals:
        write_result(result, runs)
    write_result(run_result("lora", 3, 0.5, variant="trial"), runs)  # never reported: not exported
    assert results_cli.main(["export", str(runs), "--format", "peft-mc", "--out", str(out)]) == 0
    assert "wrote 2 peft-mc file(s)" in capsys.readouterr().out
    files = sorted(out.rglob("*.json"))
    assert [f.relative_to(out).parts[:2] for f in files] == [("sst2", "results")] * 2
    written = json.loads(files[0].read_text())
    assert set(written) == set(peft_mc.BLOCKS)
    assert written["run_info"]["peft_config"]["peft_type"] == "LORA"  # from peft's registry
    assert written["run_info"]["train_config"]["dtype"] == "float32"  # bf16-mixed keeps float32 weights
    assert written["run_info"]["train_config"]["use_amp"] is True
    assert written["train_info"]["accelerator_memory_max"] == 2048 * 2**20
    assert next(k for k in written["train_info"]["metrics"][-1] if k.startswith("test ")) == "test accuracy"

    loaded, skipped = scan_results(out, foreign=True)
    assert skipped == []
    back = sorted((r for _, r in loaded), key=lambda r: r.seed)
    for original, copy in zip(originals, back, strict=True):
        assert lb.headline(copy) == lb.headline(original)
        assert copy.efficiency["trainable_params"] == original.efficiency["trainable_params"]
        assert (copy.method, copy.task, copy.model) == ("lora", "sst2", "roberta-base")
        assert copy.seed == original.seed
        assert copy.study == peft_mc.SOURCE and copy.reference == original.reference
    (row,) = lb.build(back).rows  # one experiment per configuration: the seeds pool again
    assert row.n == 2 and row.label.endswith("(peft-mc)")


def test_a_run_that_did_not_finish_is_exported_as_failed(tmp_path: Path) -> None:
    failed = run_result("lora", 1, None, status="oom", error="CUDA out of memory")
    data = peft_mc.to_peft_mc(failed)
    assert data["train_info"]["status"] == "failed"
    assert data["run_info"]["error_msg"] == "oom: CUDA out of memory"
    back = peft_mc.from_peft_mc(data, tmp_path / "synthetic" / "results" / "x.json")
    assert back.status == "failed" and "CUDA out of memory" in back.error


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"train_info.metrics": "many"}, "train_info.metrics"),
        ({"train_info.status": "done"}, "train_info.status"),
        ({"train_info.num_trainable_params": "9M"}, "train_info.num_trainable_params"),
        ({"run_info.train_config": None}, "run_info.train_config"),
        ({"run_info.peft_config": ["LORA"]}, "run_info.peft_config"),
    ],
)
def test_a_malformed_peft_mc_file_is_skipped_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, changes: dict, field: str
) -> None:
    runs = tmp_path / "runs" / "MetaMathQA" / "results"
    runs.mkdir(parents=True)
    (runs / "bad.json").write_text(json.dumps(_theirs(tmp_path, **changes)))
    shutil.copy(FILE, runs / "good.json")
    assert lb.main([str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and "bad.json: peft-mc result: " + field in lines[0]
    assert "lora/llama-3.2-3B-rank32 (peft-mc)" in printed.out  # the good file still makes its row


def test_a_file_missing_a_block_names_it(tmp_path: Path) -> None:
    data = _theirs(tmp_path)
    del data["train_info"]
    path = tmp_path / "MetaMathQA" / "results" / "partial.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    (_, reason), *rest = scan_results(tmp_path, foreign=True)[1]
    assert rest == [] and reason == "peft-mc result: file: no train_info"


def test_exporting_results_never_imports_bitsandbytes(tmp_path: Path) -> None:
    """Converting result files reads peft's registry and quantises nothing: bitsandbytes (a second and a
    kernels warning on CPUs) must stay out of the process."""
    import subprocess
    import sys

    committed = Path(__file__).resolve().parents[1] / "results" / "compare_all_methods" / "runs"
    (tmp_path / "runs").mkdir()
    shutil.copy(
        committed / "mr__minilm__lora__seed1__b93fb4661e0e.json", tmp_path / "runs"
    )  # a real run's config
    code = (
        "import sys; from peftbench.results_cli import main; "
        f"code = main(['export', {str(tmp_path / 'runs')!r}, '--out', {str(tmp_path / 'out')!r}]); "
        "print('BNB', sys.modules.get('bitsandbytes') is not None); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "BNB False" in done.stdout and "gemm_4bit" not in done.stderr
