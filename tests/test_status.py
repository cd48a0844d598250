"""``peftbench-results status``: the points a sweep would run, found by the run ids a resumed sweep computes,
and what each has (a finished file of any label, the newest failed attempt, nothing, or a search to wait for).
No training: result files are written by hand under the run ids the points compose to."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_DEFAULTS, compose_config, run_result
from omegaconf import OmegaConf

from peftbench import results_cli, status
from peftbench.resources import compose
from peftbench.results import compute_run_id, write_result


def _sweep(tmp_path: Path) -> list[str]:
    return [*TINY_DEFAULTS, f"paths.results_dir={tmp_path}/results", "method=lora,ia3", "seed=1,2"]


def _write(tmp_path: Path, method: str, seed: int, status_: str, ended: str, variant: str = "default") -> str:
    cfg = compose_config([f"method={method}", f"seed={seed}"], tmp_path)
    result = run_result(method, seed, 0.7, status=status_, variant=variant, ended_at=ended)
    result.run_id, result.config = compute_run_id(cfg), OmegaConf.to_container(cfg, resolve=True)
    result.budget = {**result.budget, "wall_time_s": 100.0}
    write_result(result, tmp_path / "results")
    return result.run_id


def test_the_points_are_hydras_cartesian_product_in_its_order(tmp_path: Path) -> None:
    swept, jobs = status.sweep_points(_sweep(tmp_path))
    assert swept == ["method", "seed"]
    assert [[o for o in job if o.split("=")[0] in swept] for job in jobs] == [
        ["method=lora", "seed=1"], ["method=lora", "seed=2"], ["method=ia3", "seed=1"], ["method=ia3", "seed=2"],
    ]  # fmt: skip
    # A study's own grid (hydra.sweeper.params) with the command line's value of a key in its place.
    swept, jobs = status.sweep_points(["experiments=compare/tuned/search", "method=lora"])
    assert swept == ["optimizer.lr_factor"] and len(jobs) == 7
    assert all("method=lora" in job for job in jobs)


def test_each_point_says_what_it_has(tmp_path: Path, capsys) -> None:
    _write(tmp_path, "lora", 1, "ok", "2026-01-01T00:00:00+00:00")
    _write(tmp_path, "lora", 2, "failed", "2026-01-01T00:00:00+00:00")
    _write(tmp_path, "ia3", 2, "killed", "2026-01-01T00:00:00+00:00")
    ia3_2 = _write(tmp_path, "ia3", 2, "ok", "2026-01-02T00:00:00+00:00", variant="tuned")  # finished later
    swept, points = status.study_status(_sweep(tmp_path))
    states = {" ".join(p.overrides): p.state for p in points}
    assert states == {
        "method=lora seed=1": "ok", "method=lora seed=2": "failed",
        "method=ia3 seed=1": "to run", "method=ia3 seed=2": "ok",
    }  # fmt: skip
    assert next(p for p in points if p.overrides == ["method=ia3", "seed=2"]).run_id == ia3_2
    assert next(p for p in points if p.state == "to run").run_id == compute_run_id(
        compose([*_sweep(tmp_path)[:-2], "method=ia3", "seed=1"])
    )
    table = status.status_table(points)
    assert "| lora | 1 | 0 | 1 | 1/2 |" in table and "| ia3 | 1 | 1 | 0 | 1/2 |" in table
    assert "| **all** | 2 | 1 | 1 | **2/4** |" in table
    assert "2 point(s) left; at the finished points' median wall time (100 s" in table

    assert results_cli.main(["status", *_sweep(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert f"to run  {compute_run_id(compose([*_sweep(tmp_path)[:-2], 'method=ia3', 'seed=1']))}" in out
    assert "failed" in out and "method=lora seed=2" in out
    assert "method=lora seed=1" not in out.split("\n\n", 2)[-1].split("|")[-1]  # ok points are not listed


def test_a_report_point_before_its_search_waits_and_a_bad_override_is_one_line(
    tmp_path: Path, capsys
) -> None:
    report = [*TINY_DEFAULTS, f"paths.results_dir={tmp_path}/results", "study=s", "method=lora", "seed=1,2"]
    report.append("optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}")
    _, points = status.study_status(report)
    assert [p.state for p in points] == ["waiting", "waiting"] and "run the search stage first" in points[
        0
    ].why
    assert results_cli.main(["status", "method=no_such_method"]) == 2
    assert "method=no_such_method: no such method config" in capsys.readouterr().err


def test_a_log_gets_one_progress_line_not_a_counter_rewritten_in_place(tmp_path: Path, capsys) -> None:
    sweep = [*TINY_DEFAULTS, f"paths.results_dir={tmp_path}/results", "method=lora", "seed=range(1,13)"]
    assert results_cli.main(["status", *sweep]) == 0
    assert capsys.readouterr().err == "\rcomposed 12/12 points\n"  # stderr is no terminal here
