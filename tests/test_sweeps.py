"""Sweeps: seeds, resume, failure statuses, the subprocess launcher, tuned selection, leaderboard and plots."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_result

from peftbench.errors import ConfigError
from peftbench.leaderboard import aggregate
from peftbench.leaderboard import main as leaderboard_main
from peftbench.results import load_results, read_result, write_result
from peftbench.sweeps import select_tuned
from peftbench.train import run

TINY = ["model=tiny-bert", "task=synthetic", "logger=none", "trainer.precision=32-true"]


def _train(
    args: list[str], tmp_path: Path, env: dict | None = None, returncode: int = 0
) -> subprocess.CompletedProcess:
    multirun = ["-m"] if "-m" in args else []  # Hydra's flag goes before the overrides
    args = [a for a in args if a != "-m"]
    command = [
        sys.executable,
        "-m",
        "peftbench.train",
        *multirun,
        *TINY,
        *args,
        f"paths.results_dir={tmp_path}/results",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=tmp_path
    )
    assert done.returncode == returncode, done.stderr[-3000:]
    return done


def _summary(stderr: str) -> list[str]:
    """The end-of-sweep lines, one per job that did not finish ok."""
    return [line for line in stderr.splitlines() if line.startswith("peftbench-train: job #")]


def test_leaderboard_tables_plots_and_report(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    for seed, (full, lora) in enumerate([(0.80, 0.70), (0.90, 0.74)], start=1):
        write_result(run_result("full", seed, full), results)
        write_result(run_result("lora", seed, lora), results)
    write_result(
        run_result("lora", 3, None, status="diverged", error="RunDiverged: non-finite loss"), results
    )
    write_result(run_result("lora", 1, 0.99, task="other"), results)  # another task: never averaged in
    (results / "corrupt.json").write_text("{not json")
    (results / "foreign.json").write_text(json.dumps({"hello": 1}))
    (results / "future.json").write_text(json.dumps({"schema_version": 99}))

    rows = aggregate(load_results(results)[0])
    by_key = {(r.task, r.method): r for r in rows}
    full = by_key[("synthetic", "full")]
    assert (
        full.n == 2 and math.isclose(full.mean, 0.85) and math.isclose(full.std, statistics.stdev([0.8, 0.9]))
    )
    assert by_key[("synthetic", "lora")].n == 2  # the diverged seed is not averaged in
    assert by_key[("other", "lora")].n == 1
    assert [r.method for r in rows if r.task == "synthetic"] == ["full", "lora"]  # sorted by score

    out = tmp_path / "board"
    assert leaderboard_main([str(results), "--out", str(out), "--task", "synthetic"]) == 0
    printed = capsys.readouterr()
    assert "diverged: synthetic/tiny-bert/lora seed 3" in printed.out  # failed runs listed apart
    for name in ("corrupt.json", "foreign.json", "future.json"):  # unreadable files reported, not fatal
        assert name in printed.err
    markdown, latex = (out / "leaderboard.md").read_text(), (out / "leaderboard.tex").read_text()
    csv_lines = (out / "leaderboard.csv").read_text().splitlines()
    # Old-style results (no predictions): a t interval over the 2 seeds, marked seed-only; the formats agree
    # (LaTeX writes the paper's mean ± half-width: 1.4853 - 0.8500 = 0.6353).
    assert "0.8500 [0.2147, 1.4853]†" in markdown and r"0.8500 \pm 0.6353^\dagger" in latex
    assert len(csv_lines) == 3 and csv_lines[1].startswith("synthetic,tiny-bert,40 steps x 16,full,default,")
    assert "other" not in markdown  # --task filter
    report = (out / "report.md").read_text()
    plots = sorted(out.glob("pareto_*"))
    assert len(plots) == 6 and all(p.stat().st_size > 1000 for p in plots)  # 3 axes x (png, svg)
    assert all(f"]({p.name})" in report for p in plots if p.suffix == ".png")
    assert "corrupt.json" in report and "diverged" in report


def test_tuned_is_chosen_by_validation_never_by_test() -> None:
    search = {"sweeper": "optuna", "n_trials": 3, "sweep_dir": "/s"}
    trials = [
        run_result("lora", 1, 0.95, val=0.60, variant="trial", search=search),  # best test, worse validation
        run_result("lora", 1, 0.70, val=0.80, variant="trial", search=search),
        run_result("lora", 1, None, status="failed", variant="trial", search=search),
    ]
    trials[1].run_id = "chosen"
    (tuned,) = select_tuned(trials)
    assert tuned.variant == "tuned" and tuned.run_id == "chosen" and tuned.test["test/accuracy"] == 0.70
    assert (
        tuned.search["trials_run"] == 3 and tuned.search["trials_ok"] == 2 and tuned.search["n_trials"] == 3
    )
    assert tuned.filename.endswith("__tuned.json")


def test_seed_sweep_with_a_failing_point_then_leaderboard(tmp_path: Path) -> None:
    """2 methods x 2 seeds plus an injected bad point (seed -1): a config error, which is not a run. The sweep
    finishes the others, writes no result for it, lists it at the end and exits non-zero (it exited 0 and
    recorded a `failed` run before)."""
    args = ["-m", "hydra/launcher=basic", "method=full,head_only", "debug=fast_dev_run", "seed=1,2,-1"]
    done = _train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path, returncode=1)
    results, skipped = load_results(tmp_path / "results")
    assert not skipped and len(results) == 4 and all(r.status == "ok" for r in results)
    summary = _summary(done.stderr)
    assert len(summary) == 2 and all(": config error: seed=-1: expected an integer" in s for s in summary)
    assert "method=full" in summary[0] and "method=head_only" in summary[1]
    assert "Traceback" not in done.stderr
    rows = {r.method: r for r in aggregate(results)}
    for method in ("full", "head_only"):
        scores = [r.test["test/accuracy"] for r in results if r.method == method and r.status == "ok"]
        assert rows[method].n == 2 and math.isclose(rows[method].mean, statistics.fmean(scores))
    budget = next(r for r in results if r.status == "ok").budget
    assert budget["steps"] == 1 and budget["samples"] == 16 and budget["tokens"] > 0
    assert budget["train_flops_est"] > 0 and budget["wall_time_s"] > 0
    assert "| row " in done.stdout and "seed -1" not in done.stdout


def test_resume_skips_a_finished_point_and_reruns_on_request(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr("peftbench.sweeps.is_multirun", lambda: True)  # resume applies to multiruns
    monkeypatch.setattr("peftbench.sweeps.search_context", lambda cfg=None: ("default", None))
    monkeypatch.setattr("peftbench.sweeps.job_provenance", dict)
    cfg = make_cfg("method=head_only", "debug=fast_dev_run")
    first = run(cfg)
    path = Path(first.provenance["result_path"])
    stamp = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished sweep point was trained again")

    monkeypatch.setattr("peftbench.assemble.assemble", no_training)
    again = run(cfg)
    assert again.run_id == first.run_id and again.status == "ok" and path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="trained again"):  # sweep.resume=false re-runs it
        run(make_cfg("method=head_only", "debug=fast_dev_run", "sweep.resume=false"))


@pytest.mark.slow  # 37 s: three real jobs; the default suite keeps the server-death test of the same path
def test_subprocess_launcher_records_a_killed_job_and_goes_on(tmp_path: Path) -> None:
    env = {"PEFTBENCH_TEST_KILL_JOB": "method=full"}  # job 0 SIGKILLs itself, as the OOM killer would
    args = ["-m", "method=full,head_only", "debug=fast_dev_run", f"hydra.sweep.dir={tmp_path}/sweep"]
    done = _train(args, tmp_path, env, returncode=1)  # the sweep goes on, then says a job was killed
    (line,) = _summary(done.stderr)
    assert line.startswith("peftbench-train: job #0 (") and "killed: process killed by SIGKILL" in line
    results = {r.method: r for r in load_results(tmp_path / "results")[0]}
    assert results["full"].status == "killed" and "SIGKILL" in results["full"].error
    assert results["head_only"].status == "ok" and results["head_only"].efficiency["peak_mem_mb"] > 0
    # Recorded relative to the launch directory (the sweep ran in tmp_path): no machine-local absolute path.
    assert results["head_only"].sweep_dir == "./sweep"
    # The jobs were forks of the launcher's fork server (the default), and a fork trains exactly as the
    # same run does in a process of its own (here: in this one).
    forked = results["head_only"]
    assert forked.provenance["job_start"] == "fork server"
    assert forked.efficiency["peak_mem_source"] == "vmhwm"  # its own peak: the fork reset the high-water mark
    assert "| head_only" in done.stdout  # the end-of-sweep comparison table
    alone = run(compose_config(["method=head_only", "debug=fast_dev_run"], tmp_path / "alone"))
    assert (alone.test, alone.predictions) == (forked.test, forked.predictions) and alone.predictions
    # Lightning's own lines reach the job's log file, as they do in a fresh interpreter.
    assert "Seed set to" in next((tmp_path / "sweep").glob("1_*/*.log")).read_text()

    # The same sweep again, as after an interruption: only the killed point runs; the finished one is
    # skipped by the launcher itself (no process started) and its file is left untouched.
    finished = tmp_path / "results" / results["head_only"].filename
    stamp = finished.stat().st_mtime_ns
    # This time without the fork server: the re-run job starts a fresh interpreter.
    again = _train(
        [*args[:-1], f"hydra.sweep.dir={tmp_path}/sweep2", "hydra.launcher.fork_server=false"], tmp_path
    )
    assert "#1 skipped: finished result" in again.stdout + again.stderr
    assert not list((tmp_path / "sweep2").glob("1_*")) and finished.stat().st_mtime_ns == stamp
    rerun = {r.method: r for r in load_results(tmp_path / "results")[0]}
    # the killed record was replaced by the re-run
    assert sorted((m, r.status) for m, r in rerun.items()) == [("full", "ok"), ("head_only", "ok")]
    assert rerun["full"].provenance["job_start"] == "fresh interpreter"


def test_nan_loss_records_diverged(make_cfg, monkeypatch) -> None:
    from peftbench.metrics.budget import RunDiverged
    from peftbench.models.module import PeftBenchModule

    original = PeftBenchModule.training_step
    monkeypatch.setattr(
        PeftBenchModule,
        "training_step",
        lambda self, batch, i: original(self, batch, i) * torch.tensor(math.nan),
    )
    cfg = make_cfg("method=lora", "debug=smoke")
    with pytest.raises(RunDiverged):
        run(cfg)
    (path,) = Path(cfg.paths.results_dir).glob("*.json")
    result = read_result(path)
    assert result.status == "diverged" and "non-finite" in result.error


def test_fsdp_refuses_cpu_and_ddp_composes(make_cfg) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP may run")
    with pytest.raises(ConfigError, match="trainer.strategy=.*FSDP.*CPU"):
        run(make_cfg("method=lora", "trainer=fsdp", "debug=fast_dev_run"))
    assert not list(Path(make_cfg().paths.results_dir).glob("*.json"))  # refused before anything ran
    ddp = compose_config(["trainer=ddp"])
    assert (
        ddp.trainer.strategy == "ddp"
        and ddp.trainer.devices == 2
        and ddp.trainer.max_steps == ddp.task.max_steps
    )


@pytest.mark.parametrize(
    ("launcher", "key", "expected"),
    [
        ("subprocess", "_target_", "hydra_plugins.peftbench_plugin.subprocess_launcher.SubprocessLauncher"),
        ("joblib_local", "n_jobs", 2),
        ("slurm", "_target_", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("slurm_ddp", "tasks_per_node", 4),
    ],
)
def test_launcher_presets_compose(launcher: str, key: str, expected) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from peftbench.resources import compose

    cfg = compose([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher[key] == expected


def test_optuna_per_method_splits_outer_choices() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra_plugins.peftbench_plugin.optuna_per_group import split_arguments

    inner, outer = split_arguments(
        ["method=lora,ia3", "seed=1,2", "model=tiny-bert", "optimizer.lr=tag(log, interval(1e-5, 1e-2))"]
    )
    assert outer == [["method=lora", "method=ia3"], ["seed=1", "seed=2"]]
    assert inner == ["model=tiny-bert", "optimizer.lr=tag(log, interval(1e-5, 1e-2))"]


def test_tensorboard_logger_preset_runs(make_cfg) -> None:
    pytest.importorskip("tensorboard")
    cfg = make_cfg("method=head_only", "debug=smoke", "logger=tensorboard")
    result = run(cfg)
    assert result.status == "ok"
    assert list(Path(cfg.paths.output_dir, "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_wandb_logger_runs_offline_without_a_key(make_cfg, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = make_cfg("method=head_only", "debug=smoke", "logger=wandb")
    assert run(cfg).status == "ok"
    assert list(Path(cfg.paths.output_dir, "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_ddp_over_two_cpu_processes_writes_onerun_result(tmp_path: Path) -> None:
    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "method=lora",
        "debug=smoke",
        f"hydra.run.dir={tmp_path}/run",
    ]
    _train(args, tmp_path)
    (result,) = load_results(tmp_path / "results")[0]
    assert result.status == "ok" and result.budget["world_size"] == 2
    assert result.budget["samples"] == 4 * 16 * 2  # steps x batch x ranks, gathered across ranks
    assert "test/accuracy" in result.test
    # Each rank tested its shard; the stored predictions are the whole split, once each, in split order.
    assert len(result.predictions["test"]["pred"]) == result.data["sizes"]["test"]
    assert "partial" not in result.predictions["test"]
