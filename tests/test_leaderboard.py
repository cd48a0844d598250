"""The leaderboard: rows are configurations, honest budgets, intervals, paired tests, tie groups and flags.

Every result is built by hand (no training): ``_result`` writes what a run of the given configuration would
have recorded, with per-example predictions when ``correct`` (which test examples it got right) is given.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peftbench import leaderboard as lb
from peftbench.results import RunResult, scan_results, write_result

N_TEST = 800


def _result(
    method: str = "lora",
    seed: int = 1,
    score: float = 0.8,
    *,
    r: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    precision: str = "bf16-mixed",
    steps: int = 40,
    max_steps: int = 40,
    correct: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    curve: list[float] | None = None,
    best_step: int | None = None,
    mem_kind: str | None = "cpu_rss",
    peak: float = 1500.0,
    schema_version: int = 3,
    ended_at: str = "2026-01-01T00:00:00+00:00",
    run_id: str | None = None,
    **extra: Any,
) -> RunResult:
    """One ok run as the trainer would record it. ``correct``: a 0/1 vector of which test examples it got right
    (predictions are then stored and ``score`` is their accuracy); ``curve``: val/accuracy per 10 steps."""
    peft_config = {
        "_target_": "peft.LoraConfig",
        "r": 8 if r is None else r,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
    }
    default_lr = 2e-5 if method == "full" else 5e-4  # conf/method/{full,lora}.yaml
    method_config = {"name": method, "impl": "peft_tuner", "lr": default_lr, "peft_config": peft_config}
    if method == "full":
        method_config = {"name": "full", "impl": "full", "lr": default_lr}
    config = {
        "seed": seed,
        "method": method_config,
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": default_lr if lr is None else lr},
        "trainer": {"precision": precision, "max_steps": max_steps, "accumulate_grad_batches": 1},
        "task": {
            "name": "synthetic", "headline": "accuracy", "monitor": "val/accuracy", "monitor_mode": "max",
            "num_labels": 2, "batch_size": 16, "max_steps": max_steps,
        },
    }  # fmt: skip
    predictions = {}
    if correct is not None:
        labels = np.arange(len(correct)) % 2 if labels is None else labels  # balanced: majority class 0.5
        pred = np.where(correct == 1, labels, 1 - labels)
        predictions = {"test": {"pred": pred.tolist(), "label": labels.tolist()}}
        score = float(np.mean(pred == labels))
    efficiency = {"trainable_params": 100 * (r or 8), "trainable_ratio_pct": 0.1 * (r or 8), "peak_mem_mb": peak,
                  "train_samples_per_s": 100.0, "train_time_s": 10.0}  # fmt: skip
    if mem_kind:
        efficiency.update(
            peak_mem_kind=mem_kind, peak_mem_increment_mb=peak - 600, peak_mem_baseline_mb=600.0
        )
    points = [{"step": 10 * (i + 1), "val/accuracy": v, "train/loss": 0.5} for i, v in enumerate(curve or [])]
    if curve and best_step is None:
        best_step = points[int(np.argmax(curve))]["step"]
    tag = f"{method}-r{r}-lr{lr}-{device}-{precision}-{steps}-{max_steps}-{extra.pop('tag', '')}"
    return RunResult(
        run_id=run_id or f"{abs(hash(tag)) % 10**12:012d}{seed}",
        task="synthetic",
        model="tiny-bert",
        method=method,
        seed=seed,
        test={"test/accuracy": score},
        selection={
            "monitor": "val/accuracy",
            "mode": "max",
            "chosen": "best",
            "best_step": best_step,
            "global_steps": steps,
        },  # fmt: skip
        efficiency=efficiency,
        budget={"steps": steps, "max_steps": max_steps, "batch_size": 16},
        predictions=predictions,
        curve=points,
        precision=precision,
        config=config,
        provenance={"device": {"accelerator": device}},
        ended_at=ended_at,
        schema_version=schema_version,
        **extra,
    )


def _correct(seed: int, accuracy: float, n: int = N_TEST) -> np.ndarray:
    """Exactly round(accuracy * n) of n examples right, at random positions."""
    out = np.zeros(n, dtype=int)
    out[np.random.default_rng(seed).choice(n, round(accuracy * n), replace=False)] = 1
    return out


def _rows(results: list[RunResult], **options: Any) -> dict[str, lb.Row]:
    return {row.label: row for row in lb.build(results, **options).rows}


def test_rows_never_pool_configurations() -> None:
    """Issue 14 item 1: r=2 and r=16 at seed 1 were one `lora` row with n=2 and seeds "1 1"."""
    rows = _rows([_result(r=2, score=0.7), _result(r=16, score=0.8)])
    assert sorted(rows) == ["lora r=16", "lora r=2"]
    assert all(row.n == 1 and row.numbers()["seeds"] == "1" for row in rows.values())
    assert rows["lora r=16"].numbers()["differs"] == "method.peft_config.r=16"
    assert rows["lora r=2"].numbers()["trainable_params"] == 200  # not the mean of two configurations
    rows = _rows([_result(lr=5e-4, score=0.8), _result(lr=1e-5, score=0.6)])
    assert sorted(rows) == ["lora lr=0.0005", "lora lr=1e-05"]
    assert rows["lora lr=1e-05"].numbers()["differs"] == "optimizer.lr=1e-05"
    assert sorted(_rows([_result(device="cpu"), _result(device="cuda")])) == [
        "lora device=cpu",
        "lora device=cuda",
    ]
    precisions = sorted(_rows([_result(precision="bf16-mixed"), _result(precision="32-true")]))
    assert precisions == ["lora precision=32-true", "lora precision=bf16-mixed"]
    # Seeds of one configuration still pool; a lone non-default row says how it differs from the YAML.
    rows = _rows([_result(seed=s, r=16) for s in (1, 2, 3)] + [_result(method="full")])
    assert rows["lora r=16"].n == 3 and rows["lora r=16"].numbers()["seeds"] == "1 2 3"
    assert "full" in rows


def test_labels_are_unique_even_when_only_documentation_differs() -> None:
    a, b = _result(), _result(tag="b")
    b.config["method"]["paper"] = "another citation"  # not a label key, but another configuration
    labels = sorted(_rows([a, b]))
    assert len(labels) == 2 and labels[0] != labels[1] and all(label.startswith("lora #") for label in labels)


def test_a_copied_file_counts_once_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    for seed in (1, 2):
        write_result(_result(seed=seed, score=0.7 + seed / 100), results / "a")
    shutil.copytree(results / "a", results / "b")
    out = tmp_path / "board"
    assert lb.main([str(results), "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr()
    warnings = [line for line in printed.err.splitlines() if line.startswith("warning: duplicate")]
    assert len(warnings) == 2 and all("in 2 files, counted once" in w for w in warnings)  # one per run
    (row,) = lb.build(lb.deduplicate(scan_results(results)[0])[0]).rows
    assert row.n == 2
    report = (out / "report.md").read_text()
    assert "## Duplicates" in report and report.count("counted once") == 2
    assert next(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))["n"] == "2"


def test_one_seed_twice_in_one_configuration_keeps_the_newest() -> None:
    old = _result(score=0.6, run_id="aaaaaaaaaaaa", ended_at="2026-01-01T00:00:00+00:00")
    new = _result(score=0.8, run_id="bbbbbbbbbbbb", ended_at="2026-02-01T00:00:00+00:00")
    board = lb.build([new, old])
    (row,) = board.rows
    assert row.n == 1 and row.mean == 0.8
    assert len(board.warnings) == 1 and "kept bbbbbbbbbbbb (newest ended_at)" in board.warnings[0]


def test_budget_label_uses_steps_run_and_flags_short_runs() -> None:
    """Issue 14 item 2: trainer.max_steps=5 trained 5 steps but the label said 40."""
    (row,) = lb.build([_result(steps=5, max_steps=40)]).rows
    assert row.budget == "5 steps x 16"
    assert "ran 5 of 40 steps: 1/1 runs" in row.flags
    (full,) = lb.build([_result(steps=40, max_steps=40)]).rows
    assert not any(f.startswith("ran ") for f in full.flags)


def test_exact_ties_sort_by_label_not_file_order() -> None:
    """Issue 14 item 3: qlora and rslora are exactly tied (the same figures at other seeds) and printed in file
    order. Methods without a shipped YAML here, so the labels are the bare names."""
    runs = [_result(method="m_rs", seed=1, score=0.79), _result(method="m_rs", seed=2, score=0.80)]
    runs += [_result(method="m_q", seed=1, score=0.80), _result(method="m_q", seed=2, score=0.79)]
    for order in (runs, runs[::-1]):
        rows = lb.build(order).rows
        assert [row.label for row in rows] == ["m_q", "m_rs"] and rows[0].mean == rows[1].mean


def test_example_bootstrap_interval_is_wider_than_the_seed_spread() -> None:
    """Three seeds with identical predictions (seed std 0) still have ~2.8 points of test-set uncertainty."""
    correct = _correct(0, 0.8)
    (row,) = lb.build([_result(seed=s, correct=correct) for s in (1, 2, 3)]).rows
    assert row.std == 0 and row.interval.method == "bootstrap over seeds x test examples"
    assert 0.024 < row.interval.half_width < 0.032 and not row.seed_only


def test_paired_test_and_holm_give_tie_groups() -> None:
    """A: reference; B: A minus the same 24 right answers at every seed (worse, paired); C: A with 2 of them
    (tied). The paired test separates B although the seeds of A spread by ~2 points."""
    rows, runs = {}, []
    for seed, accuracy in ((1, 0.78), (2, 0.82), (3, 0.80)):
        a = _correct(seed, accuracy)
        b, c = a.copy(), a.copy()
        b[np.flatnonzero(a)[:24]] = 0
        c[np.flatnonzero(a)[:2]] = 0
        runs += [_result(method="a", seed=seed, correct=a), _result(method="b", seed=seed, correct=b)]
        runs += [_result(method="c", seed=seed, correct=c)]
    board = lb.build(runs)
    rows = {row.label: row for row in board.rows}
    assert [row.label for row in board.rows] == ["a", "c", "b"]
    assert rows["a"].group == "best" and rows["b"].group == "worse" and rows["c"].group == "tied"
    assert rows["b"].difference.method == "paired bootstrap over seeds x test examples"
    assert rows["b"].difference.high < 0 and rows["b"].p_holm <= 2 * rows["b"].p  # Holm over 2 comparisons
    assert rows["c"].p_holm >= 0.05
    # --reference: every row against c instead; c is then "reference", a "tied" (2 answers apart).
    rows = _rows(runs, reference="c")
    assert rows["c"].group == "reference" and rows["a"].reference == "c" and rows["b"].group == "worse"


def test_a_row_at_chance_is_flagged_and_not_ranked() -> None:
    labels = np.array([0, 1] * (N_TEST // 2))  # balanced: the majority class scores 0.5
    runs = [_result(method="good", seed=s, correct=_correct(s, 0.8), labels=labels) for s in (1, 2)]
    runs += [_result(method="chance", seed=s, correct=_correct(s + 10, 0.51), labels=labels) for s in (1, 2)]
    board = lb.build(runs)
    rows = {row.label: row for row in board.rows}
    chance = rows["chance"]
    assert chance.group == lb.NOT_RANKED and chance.difference is None and chance.reference is None
    assert "at/below trivial baseline 0.5000 (majority class)" in chance.flags
    assert rows["good"].group == "best" and board.rows[-1] is chance  # listed, after the ranked rows
    text = lb.markdown(board.rows, board=board)
    assert "not ranked" in text and "p Holm-adjusted over 0 comparison(s)" in text


def test_without_stored_labels_the_baseline_is_a_uniform_guess() -> None:
    runs = [
        _result(method="chance", seed=s, score=v, schema_version=2, mem_kind=None)
        for s, v in ((1, 0.49), (2, 0.53))
    ]
    (row,) = lb.build(runs).rows
    assert row.baseline == 0.5 and row.group == lb.NOT_RANKED
    assert "at/below trivial baseline 0.5000 (uniform guess; labels not stored)" in row.flags


def test_convergence_flags() -> None:
    rising = _result(curve=[0.6, 0.7, 0.8])
    peaked = _result(seed=2, curve=[0.6, 0.8, 0.7])
    assert lb.convergence(rising) == "not converged" and lb.convergence(peaked) is None
    (row,) = lb.build([rising, peaked]).rows
    assert "not converged: 1/2 runs" in row.flags
    # Older files have no curve: the best checkpoint's step (from its file name) against the final step.
    old = _result(schema_version=2, steps=400, max_steps=400)
    old.selection = {"monitor": "val/accuracy", "mode": "max", "chosen": "best", "global_steps": 400,
                     "best_checkpoint": "/x/checkpoints/best-step400.ckpt"}  # fmt: skip
    earlier = _result(seed=2, schema_version=2, steps=400, max_steps=400)
    earlier.selection = {**old.selection, "best_checkpoint": "/x/checkpoints/best-step300.ckpt"}
    (row,) = lb.build([old, earlier]).rows
    assert "best = last eval (no curve stored): 1/2 runs" in row.flags


def test_old_files_fall_back_to_seed_only_intervals_and_say_so(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for seed, score in ((1, 0.78), (2, 0.80), (3, 0.79)):
        write_result(_result(seed=seed, score=score, schema_version=2, mem_kind=None), results)
        write_result(
            _result(method="full", seed=seed, score=score + 0.01, schema_version=2, mem_kind=None), results
        )
    out = tmp_path / "board"
    assert lb.main([str(results), "--out", str(out), "--no-plots"]) == 0
    markdown, report = (out / "leaderboard.md").read_text(), (out / "report.md").read_text()
    assert "95 % interval: t over seeds (no per-example predictions) (2/2 rows)" in markdown
    assert "†" in markdown and "Welch t over seeds, unpaired" in markdown
    assert "Seed-only intervals (no per-example predictions): 2/2 rows (all)." in report
    row = next(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert row["interval_method"] == "t over seeds (no per-example predictions)" and row["group"] == "best"
    assert "peak MiB (CPU RSS)" in markdown  # old files: RSS unless CUDA figures were recorded


def test_memory_never_averages_sources() -> None:
    runs = [_result(seed=1, mem_kind="cpu_rss"), _result(seed=2, mem_kind="cuda_allocated", peak=900.0)]
    (row,) = lb.build(runs).rows
    assert row.memory() == {"kind": "mixed", "peak": None, "increment": None}
    (cells,) = lb.display_rows([row])
    assert cells["peak MiB"] == "mixed sources"
    (cuda,) = lb.build([_result(mem_kind="cuda_allocated", peak=900.0)]).rows
    (cells,) = lb.display_rows([cuda])
    assert cells["peak MiB (CUDA allocated)"] == "900" and cells["+MiB over load (CUDA allocated)"] == "300"


def test_peak_rss_from_processes_started_two_ways_says_so() -> None:
    def run(method: str, seed: int, start: str) -> RunResult:
        result = _result(method=method, seed=seed)
        result.provenance["job_start"] = start
        return result

    alike = lb.build([run("lora", 1, "fork server"), run("full", 1, "fork server")]).rows
    assert not any("started in" in line for line in lb.section_footnotes(alike))
    mixed = lb.build([run("lora", 1, "fork server"), run("qlora", 1, "fresh interpreter")]).rows
    (line,) = [line for line in lb.section_footnotes(mixed) if "started in" in line]
    assert "started in 2 ways (runs: fork server 1, fresh interpreter 1)" in line and "+MiB over load" in line


def test_throughput_from_two_cpu_models_says_so() -> None:
    def run(method: str, seed: int, cpu: str) -> RunResult:
        result = _result(method=method, seed=seed)
        result.provenance.setdefault("device", {})["cpu_model"] = cpu
        return result

    alike = lb.build([run("lora", 1, "AMD EPYC"), run("full", 1, "AMD EPYC")]).rows
    assert not any("CPU models" in line for line in lb.section_footnotes(alike))
    mixed = lb.build(
        [run("lora", 1, "AMD EPYC"), run("lora", 2, "Intel Xeon"), run("full", 1, "AMD EPYC")]
    ).rows
    (line,) = [line for line in lb.section_footnotes(mixed) if "CPU models" in line]
    assert "ran on 2 CPU models (runs: AMD EPYC 2, Intel Xeon 1)" in line
    # One model name, two capabilities: bf16 autocast without native bf16 runs emulated (~2.6x slower, measured
    # on an Ice Lake Xeon), which the count names; an fp32 run on the same CPU is no different.
    emulated = run("lora", 3, "Intel Xeon")
    emulated.provenance["device"]["cpu_bf16_native"] = False
    fp32 = run("full", 2, "Intel Xeon")
    fp32.provenance["device"]["cpu_bf16_native"] = False
    fp32.precision = "32-true"
    rows = lb.build([run("lora", 1, "Intel Xeon"), run("lora", 2, "Intel Xeon"), emulated, fp32]).rows
    (line,) = [line for line in lb.section_footnotes(rows) if "CPU models" in line]
    assert "(runs: Intel Xeon 3, Intel Xeon (bf16 emulated) 1)" in line


def test_cost_table_counts_each_job_once_and_never_pools_cpus() -> None:
    def job(
        method: str, seed: int, cpu: str, seconds: int, variant: str = "tuned", run_id: str = ""
    ) -> RunResult:
        result = _result(method=method, seed=seed, run_id=run_id or f"{method}{seed}{cpu}", variant=variant,
                         started_at="2026-01-01T00:00:00+00:00", ended_at=f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}+00:00")  # fmt: skip
        result.provenance["device"]["cpu_model"] = cpu
        result.efficiency["train_samples_per_s"] = 3600 / seconds
        return result

    shared = [
        job("rslora", 1, "AMD EPYC", 300, "tuned", "same"),
        job("rslora", 1, "AMD EPYC", 300, "default", "same"),
    ]
    runs = [
        *shared,
        job("lora", 1, "AMD EPYC", 120),
        job("lora", 2, "Intel Xeon", 240),
        job("lora", 3, "Intel Xeon", 360),
    ]
    rows = [line.split("|")[1:-1] for line in lb.cost_table(runs).splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip() for c in row] for row in rows]
    assert [
        "rslora",
        "AMD EPYC",
        "1",
        "1 default, 1 tuned",
        "300",
        "12",
        "0.08",
    ] in cells  # one job, two files
    assert [
        "lora",
        "Intel Xeon",
        "2",
        "2 tuned",
        "240–360",
        "10–15",
        "0.17",
    ] in cells  # CPUs never share a row
    assert ["**all**", "AMD EPYC", "2", "", "", "", "0.12"] in cells
    assert ["**all**", "every CPU", "4", "", "", "", "0.28"] in cells
    assert lb.cost_table([_result()]) == "(no runs with timestamps)"
    slow = job("lora", 4, "Intel Xeon", 600)
    slow.provenance["device"]["cpu_bf16_native"] = False
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lb.cost_table([*runs, slow]).splitlines()]
    assert ["lora", "Intel Xeon (bf16 emulated)", "1", "1 tuned", "600", "6", "0.17"] in cells
    assert ["lora", "Intel Xeon", "2", "2 tuned", "240–360", "10–15", "0.17"] in cells  # not pooled with it


def test_outputs_are_deterministic_and_carry_pareto_probabilities(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for seed in (1, 2):
        write_result(_result(method="big", seed=seed, r=64, correct=_correct(seed, 0.85)), results)
        write_result(_result(method="small", seed=seed, r=2, correct=_correct(seed + 5, 0.84)), results)
        write_result(_result(method="bad", seed=seed, r=32, correct=_correct(seed + 9, 0.70)), results)
    outputs = []
    for name in ("one", "two"):
        assert lb.main([str(results), "--out", str(tmp_path / name), "--resamples", "500"]) == 0
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outputs[0] == outputs[1] and len(outputs[0]) == 5 + 6  # tables, page, report, 3 axes x (png, svg)
    rows = {r["label"]: r for r in csv.DictReader(io.StringIO(outputs[0]["leaderboard.csv"].decode()))}
    assert float(rows["small"]["pareto_p_trainable_pct"]) == 1.0  # cheapest: always on the front
    assert float(rows["bad"]["pareto_p_trainable_pct"]) < 0.01  # dearer than small and far worse
    assert rows["bad"]["interval_method"] == "bootstrap over seeds x test examples"
    latex = outputs[0]["leaderboard.tex"].decode()
    assert r"\toprule" in latex and r"\bottomrule" in latex and "[0." in latex  # bootstrap: asymmetric


def test_tuned_rows_pool_the_search_not_the_chosen_point() -> None:
    search = {"sweeper": "optuna", "n_trials": 8, "space": {"optimizer.lr": "interval(1e-5, 1e-2)"}}
    runs = [_result(seed=s, lr=lr, variant="tuned", search=search) for s, lr in ((1, 1e-4), (2, 3e-4))]
    (row,) = lb.build(runs).rows
    assert row.n == 2 and row.label == "lora tuned (8 trials)"


def test_end_of_sweep_table_still_works() -> None:
    """hydra_callbacks.ComparisonTable prints format_table(comparison_rows(results)) and failed_lines."""
    failed = _result(seed=3, status="failed", error="boom")
    runs = [_result(seed=1), _result(seed=2, score=0.82), _result(method="full"), failed]
    table = lb.format_table(lb.comparison_rows(runs))
    assert table.splitlines()[0].startswith("| task ") and "lora" in table and "full" in table
    assert lb.failed_lines(runs) == [f"failed: synthetic/tiny-bert/lora seed 3 ({failed.run_id}): boom"]
    assert lb.format_table([]) == "(no successful runs)"


def test_one_seed_with_predictions_says_its_interval_leaves_out_the_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    results = tmp_path / "results"
    for method in ("lora", "full"):
        write_result(_result(method=method, seed=1, correct=(rng.random(N_TEST) < 0.8).astype(int)), results)
    out = tmp_path / "board"
    assert lb.main([str(results), "--out", str(out), "--no-plots"]) == 0
    markdown, report = (out / "leaderboard.md").read_text(), (out / "report.md").read_text()
    assert "95 % interval: bootstrap over test examples (2/2 rows)" in markdown
    assert "One seed: the interval covers the test set's sampling noise only" in markdown
    assert "Seed-only intervals" not in markdown and "Seed-only intervals" not in report


@pytest.mark.parametrize("shape", ["meta", "top-level"])
def test_a_single_row_names_an_lr_apart_from_the_method_default(shape: str) -> None:
    """The method's recommended lr sits in method.meta.lr (method.lr in files written before the meta block);
    a lone row trained at another optimizer.lr says so in its label either way."""
    result = _result(lr=1e-4, score=0.8)
    method = result.config["method"]
    if shape == "meta":
        method["meta"] = {"lr": method.pop("lr")}
    (row,) = _rows([result]).values()
    assert row.label == "lora lr=0.0001"


# --- LaTeX (issue 18 item 1) -------------------------------------------------------------------------------


def _latex_board(reference: str | None = None) -> lb.Leaderboard:
    """Old files (t intervals, symmetric): full best, lora tied, bad worse, chance not ranked (at 0.5)."""
    runs = []
    for method, scores in (
        ("full", (0.80, 0.81, 0.79)),
        ("lora", (0.795, 0.80, 0.785)),
        ("bad", (0.60, 0.61, 0.59)),
        ("chance", (0.49, 0.52, 0.50)),
    ):
        for seed, score in enumerate(scores, start=1):
            run = _result(method=method, seed=seed, score=score, schema_version=2, mem_kind=None)
            if method == "full":
                run.efficiency["trainable_params"] = 22_713_090  # the markdown prints 22.7M
            runs.append(run)
    return lb.build(runs, reference=reference)


def _latex_body(latex: str) -> dict[str, str]:
    """Data lines of the (single) table by row label, bold or not."""
    body = latex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    lines = [line for line in body.splitlines() if line.strip().endswith(r"\\")]
    out = {}
    for line in lines:
        first = line.split("&", 1)[0].strip()
        out[first.removeprefix(r"\textbf{").rstrip("}")] = line
    return out


def test_latex_is_a_captioned_labelled_table_with_bold_best_and_tied_rows() -> None:
    board = _latex_board()
    groups = {row.label: row.group for row in board.rows}
    assert groups == {"full": "best", "lora": "tied", "bad": "worse", "chance": lb.NOT_RANKED}
    latex = lb.to_latex(board.rows, board=board)
    assert latex.count(r"\begin{table}") == 1 and latex.count(r"\end{table}") == 1
    caption = latex.split(r"\caption{", 1)[1].split("\n", 1)[0]
    for words in ("synthetic", "tiny-bert", "40 steps x 16", "accuracy", "95", "t over seeds", r"\pm"):
        assert words in caption, words
    assert r"\label{tab:synthetic-tiny-bert-40-steps-x-16}" in latex
    rows = _latex_body(latex)
    assert set(rows) == {"full", "lora", "bad", "chance"}
    assert r"\textbf" in rows["full"] and r"\textbf" in rows["lora"]
    assert r"\textbf" not in rows["bad"] and r"\textbf" not in rows["chance"]
    assert r"\pm" in rows["full"] and r"\pm" in rows["bad"] and "[0." not in rows["full"]
    header = latex.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    for unit in ("Trainable (\\%)", "Throughput (samples/s)", "Peak mem.\\ (MiB, CPU RSS)", "Train time (s)"):
        assert unit in header, unit
    cells = [cell.strip() for line in rows.values() for cell in line.rstrip(" \\").split("&")]
    assert not [c for c in cells if re.search(r"\d(\.\d+)?[kMB]\b", c)]  # no 22.7M / 74.5k suffixes
    assert "22,713,090" in rows["full"]
    text_mode = re.sub(r"\$[^$]*\$", "", latex)
    assert "<" not in text_mode and ">" not in text_mode  # OT1 fonts print < and > as ¡ and ¿ in text mode
    assert "$<0.001$" in rows["bad"]
    assert r"\par" in latex.split(r"\end{tabular}", 1)[1]  # the section notes under the table
    # Tested against another row: tied then means "tied with lora", not with the best: nothing is bold.
    board = _latex_board(reference="lora")
    assert r"\textbf" not in lb.to_latex(board.rows, board=board)


def test_latex_labels_are_deterministic_and_unique_per_section() -> None:
    runs = [_result(seed=s, score=0.8 + s / 100) for s in (1, 2)]
    runs += [_result(seed=s, score=0.7 + s / 100, steps=20, max_steps=20) for s in (1, 2)]
    board = lb.build(runs)
    latex = lb.to_latex(board.rows, board=board)
    labels = re.findall(r"\\label\{([^}]*)\}", latex)
    assert labels == ["tab:synthetic-tiny-bert-20-steps-x-16", "tab:synthetic-tiny-bert-40-steps-x-16"]
    assert latex.count(r"\begin{table}") == 2 and lb.to_latex(board.rows, board=board) == latex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(tmp_path: Path) -> None:
    board = _latex_board()
    document = (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        + lb.to_latex(board.rows, board=board)
        + "\\end{document}\n"
    )
    (tmp_path / "t.tex").write_text(document)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_readme_tables_match_the_committed_runs() -> None:
    """The README's generated blocks (its headline) are what peftbench-leaderboard makes of the committed
    results today: re-typed numbers, or runs added without `peftbench-leaderboard --readme README.md`, fail."""
    from peftbench import leaderboard

    root = Path(__file__).resolve().parents[1]
    readmes = [root / "README.md"] + [
        path
        for path in sorted(root.glob("results/*/README.md"))
        if "<!-- peftbench-leaderboard " in path.read_text()
    ]
    for readme in readmes:
        assert leaderboard.main(["--readme", str(readme), "--check"]) == 0, readme


def test_a_row_not_shown_above_the_head_only_probe_is_flagged_and_not_ranked() -> None:
    """RESEARCH.md: a method at or below the trivial baseline *or the head-only probe* is misconfigured or not
    converged, not ranked. A row whose paired difference to the head-only row cannot exclude 0 is flagged;
    one clearly above it stays ranked; the probe itself is ranked."""
    results = []
    for seed in (1, 2, 3):
        for method, accuracy, tag in (
            ("full", 0.86, "f"),
            ("head_only", 0.70, "h"),
            ("lora", 0.80, "l"),
            ("ia3", 0.705, "i"),
        ):
            correct = _correct(100 * seed + len(tag) + ord(tag[0]), accuracy)
            results.append(_result(method, seed, correct=correct, tag=tag))
    rows = {row.method: row for row in lb.build(results, n_resamples=500).rows}
    assert rows["ia3"].group == lb.NOT_RANKED
    assert rows["ia3"].flags[0].startswith("not above the head-only probe 0.7000: diff +0.0050 [")
    assert rows["lora"].group in ("tied", "worse") and not any("probe" in f for f in rows["lora"].flags)
    assert rows["head_only"].ranked and rows["full"].group == "best"
    assert rows["ia3"].difference is None  # not ranked: never tested against the reference


def test_without_a_head_only_row_nothing_is_held_to_a_probe() -> None:
    results = [
        _result(m, s, correct=_correct(10 * s + i, a), tag=m)
        for s in (1, 2)
        for i, (m, a) in enumerate((("full", 0.86), ("ia3", 0.52)))
    ]
    rows = {row.method: row for row in lb.build(results, n_resamples=300).rows}
    assert not any("probe" in f for row in rows.values() for f in row.flags)
