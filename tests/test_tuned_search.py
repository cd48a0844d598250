"""The tuned comparison's protocol: a grid search over a factor on each method's own lr, chosen on validation at
one seed, then the choice run at other seeds (``${peftbench.chosen:...}``), reported as variant ``tuned``.

What is guarded: the factor scales the method's lr and never the head's; a grid's jobs are trials; the choice
follows validation and never test; a report stage with another configuration, or before its search, stops
with one line; the committed study's stages compose with the same settings bar the searched key and the seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_DEFAULTS, compose_config, run_result
from omegaconf import DictConfig, OmegaConf

from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules
from peftbench.resources import config_dir, experiments_dir
from peftbench.results import compute_run_id, load_results
from peftbench.search import best_trial, chosen_trial, group_identity, lookup

CONF = Path(config_dir())

SMOKE = ("debug=fast_dev_run",)


def _initial_lrs(prepared) -> dict[str, float]:
    names = {id(p): n for n, p in prepared.module.model.named_parameters()}
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    return {
        names[id(p)]: group["initial_lr"]
        for group in prepared.trainer.optimizers[0].param_groups
        for p in group["params"]
    }


def test_lr_factor_scales_the_method_lr_and_leaves_the_head_lr(make_cfg) -> None:
    lrs = _initial_lrs(
        prepare(
            make_cfg(
                "method=lora", "optimizer.lr=1e-3", "optimizer.lr_factor=4", "optimizer.head_lr=0.05", *SMOKE
            )
        )
    )
    head = {n: lr for n, lr in lrs.items() if in_modules(n, ["classifier"])}
    body = {n: lr for n, lr in lrs.items() if n not in head}
    assert head and all(lr == pytest.approx(0.05) for lr in head.values())
    assert body and all(lr == pytest.approx(4e-3) for lr in body.values())


def test_lr_factor_one_keeps_earlier_run_ids(make_cfg) -> None:
    plain = make_cfg("method=lora")
    assert compute_run_id(make_cfg("method=lora", "optimizer.lr_factor=1.0")) == compute_run_id(plain)
    assert compute_run_id(make_cfg("method=lora", "optimizer.lr_factor=2")) != compute_run_id(plain)


def test_a_bad_lr_factor_is_refused_by_name(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_factor=0: expected a number > 0"):
        prepare(make_cfg("method=lora", "optimizer.lr_factor=0", *SMOKE))


def _trial(run_id: str, factor: float, val: float, test: float, **fields):
    result = run_result("lora", 0, test, val=val, variant="trial", **fields)
    result.run_id = run_id
    result.config = {"optimizer": {"lr_factor": factor}, "task": {"monitor": "val/accuracy"}, "seed": 0}
    result.selection = {"monitor": "val/accuracy", "mode": "max"}
    result.search = {"sweeper": "grid", "keys": ["optimizer.lr_factor"]}
    return result


def test_the_choice_follows_validation_never_test() -> None:
    trials = [
        _trial("a", 0.1, val=0.60, test=0.95),  # the best test score, a worse validation score
        _trial("b", 1.0, val=0.80, test=0.70),
        _trial(
            "c", 10.0, val=0.80, test=0.90
        ),  # tied on validation: the smaller factor wins, whatever the order
        _trial("d", 3.0, val=0.99, test=0.99, status="failed"),  # not finished: never chosen
    ]
    assert best_trial(trials).run_id == "b"
    assert best_trial(list(reversed(trials))).run_id == "b"
    assert group_identity(trials[0].config, ["optimizer.lr_factor"]) == group_identity(
        trials[2].config, ["optimizer.lr_factor"]
    )


def _train(args: list[str], tmp_path: Path, returncode: int = 0) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "peftbench.train",
        "-m",
        "hydra/launcher=basic",
        *TINY_DEFAULTS,
        "debug=smoke",
        "study=tuned-test",
        f"paths.results_dir={tmp_path}/results",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ, cwd=tmp_path)
    assert done.returncode == returncode, done.stderr[-3000:]
    return done


def test_search_then_report_runs_the_validation_choice_at_new_seeds(tmp_path: Path) -> None:
    search = ["method=lora", "seed=0", "sweep.search=[optimizer.lr_factor]", "optimizer.lr_factor=0.5,20"]
    _train([*search, f"hydra.sweep.dir={tmp_path}/search"], tmp_path)
    trials, skipped = load_results(tmp_path / "results")
    assert not skipped and len(trials) == 2  # no `tuned` copy of a grid trial: the report stage chooses
    assert all(t.variant == "trial" and t.search["keys"] == ["optimizer.lr_factor"] for t in trials)
    # The grid was given on the command line here, so no space is on record (a study's sweeper.params is).
    assert {t.search["space"]["optimizer.lr_factor"] for t in trials} == {None}
    best = best_trial(trials)

    report = ["method=lora", "seed=1,2", "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}"]
    _train([*report, f"hydra.sweep.dir={tmp_path}/report"], tmp_path)
    tuned = [r for r in load_results(tmp_path / "results")[0] if r.variant == "tuned"]
    assert sorted(r.seed for r in tuned) == [1, 2]
    for result in tuned:
        assert lookup(result.config, "optimizer.lr_factor") == lookup(best.config, "optimizer.lr_factor")
        assert result.search["chosen_run_id"] == best.run_id and result.search["trials_run"] == 2
        assert result.search["rule"] == "best validation score" and result.search["search_seed"] == 0


def test_a_report_with_another_configuration_or_no_search_stops_with_one_line(tmp_path: Path) -> None:
    trial = run_result("lora", 0, 0.7, val=0.8, variant="trial", study="tuned-test")
    base = [
        "method=lora",
        "study=tuned-test",
        "seed=3",
        "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}",
    ]
    cfg = compose_config(base, tmp_path)
    with pytest.raises(
        ConfigError, match=r"no search trials over optimizer\.lr_factor .* run the search stage first"
    ):
        chosen_trial(cfg, "optimizer.lr_factor")

    # A search at r=8; a report at r=3 must not borrow its lr.
    searched = compose_config([*base[:2], "seed=0", "optimizer.lr_factor=2"], tmp_path)
    trial.config = OmegaConf.to_container(searched, resolve=True)
    trial.search = {"sweeper": "grid", "keys": ["optimizer.lr_factor"]}
    trial.selection = {"monitor": "val/accuracy", "mode": "max"}
    from peftbench.results import write_result

    write_result(trial, tmp_path / "results")
    assert chosen_trial(cfg, "optimizer.lr_factor")[0].run_id == trial.run_id  # same configuration: found
    other = compose_config([*base, "method.peft_config.r=3"], tmp_path)
    with pytest.raises(ConfigError, match="ran another configuration") as error:
        chosen_trial(other, "optimizer.lr_factor")
    assert "\n" not in str(error.value)


def test_the_study_stages_differ_only_in_the_searched_key_and_the_seed() -> None:
    """Fair treatment by construction: one budget, head lr, pooling and data for the search, the tuned report
    and the default report."""
    stages = {
        name: OmegaConf.to_container(
            compose_config([f"experiments=compare/tuned/{name}", "method=lora"], tiny=False)
        )
        for name in ("search", "default")
    }
    for config in stages.values():
        config.pop("seed")
        config.pop("sweep")
        config["optimizer"].pop("lr_factor")
    assert stages["search"] == stages["default"]
    search = compose_config(["experiments=compare/tuned/search"], tiny=False)
    assert search.model.pooling == "mean" and search.optimizer.head_lr is not None
    params = {
        name: OmegaConf.load(experiments_dir() / "compare" / "tuned" / f"{name}.yaml").hydra.sweeper.params
        for name in ("search", "report", "default")
    }
    grid = [float(v) for v in str(params["search"]["optimizer.lr_factor"]).split(",")]
    assert (
        len(grid) >= 6 and min(grid) == pytest.approx(0.1) and max(grid) == pytest.approx(10) and 1.0 in grid
    )
    assert params["search"]["method"] == params["report"]["method"]  # every searched method is reported
    searched = set(str(params["search"]["method"]).split(","))
    assert searched | {"head_only"} == set(str(params["default"]["method"]).split(","))
    assert searched | {"head_only"} == {
        p.stem for p in (CONF / "method").glob("*.yaml")
    }  # the whole catalogue
    seeds = str(params["report"]["seed"]).split(",")
    assert len(seeds) >= 5 and str(search.seed) not in seeds  # the search seed is never a reported seed
    assert seeds == str(params["default"]["seed"]).split(",")  # tuned and default pair seed by seed


def _write_trial(
    tmp_path: Path,
    factor: float,
    run_id: str,
    val: float = 0.9,
    status: str = "ok",
    space: dict | None = None,
) -> DictConfig:
    """One grid trial of lora at seed 0 (study tuned-test) in tmp_path/results, as the search stage records it
    (``space``: the grid on record, as a study's sweeper params leave it); returns its composed config."""
    from peftbench.results import write_result

    searched = compose_config(
        ["method=lora", "study=tuned-test", "seed=0", f"optimizer.lr_factor={factor}"], tmp_path
    )
    trial = run_result("lora", 0, 0.7, val=val, variant="trial", study="tuned-test", status=status)
    trial.run_id, trial.config = run_id, OmegaConf.to_container(searched, resolve=True)
    trial.search = {"sweeper": "grid", "keys": ["optimizer.lr_factor"], **({"space": space} if space else {})}
    trial.selection = {"monitor": "val/accuracy", "mode": "max"}
    write_result(trial, tmp_path / "results")
    return searched


def test_a_choice_of_the_default_lr_is_trained_once_and_labelled_twice(tmp_path: Path, monkeypatch) -> None:
    """Factor 1 chosen: the report stage and the default stage ask for one configuration at one seed (one run
    id). Whichever comes second writes a relabelled copy of the other's file rather than training it again."""
    from peftbench import sweeps
    from peftbench.results import read_result, write_result

    monkeypatch.setattr(sweeps, "is_multirun", lambda: True)
    base = ["method=lora", "study=tuned-test"]
    _write_trial(tmp_path, 1.0, "trial1")

    report = compose_config(
        [*base, "seed=3", "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}"], tmp_path
    )
    default = compose_config([*base, "seed=3"], tmp_path)
    run_id = compute_run_id(report)
    assert run_id == compute_run_id(default)  # the same point
    assert sweeps.finished_point(report, run_id) is None and sweeps.finished_point(default, run_id) is None

    finished = run_result("lora", 3, 0.8, variant="default", study="tuned-test")
    finished.run_id, finished.config = run_id, OmegaConf.to_container(default, resolve=True)
    write_result(finished, tmp_path / "results")
    tuned = sweeps.finished_point(report, run_id)
    assert tuned.variant == "tuned" and tuned.search["chosen"] == {"optimizer.lr_factor": 1.0}
    assert tuned.search["chosen_run_id"] == "trial1" and tuned.test == finished.test
    assert read_result(tuned.provenance["result_path"]).variant == "tuned"
    assert sweeps.finished_point(default, run_id).variant == "default"  # the default file itself

    # The other order: only the tuned file exists; the default stage labels a copy.
    (tmp_path / "results" / finished.filename).unlink()
    again = sweeps.finished_point(default, run_id)
    assert again.variant == "default" and again.search is None and again.test == finished.test


def test_a_report_before_its_search_is_a_config_error_not_a_failed_run(tmp_path: Path) -> None:
    """The sweep's line for the job says `config error` and names the missing search; no result is written."""
    done = _train(
        ["method=lora", "seed=1", "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}",
         f"hydra.sweep.dir={tmp_path}/report"],
        tmp_path,
        returncode=1,
    )  # fmt: skip
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("peftbench-train: job #")]
    assert ": config error: " in line and "run the search stage first" in line, line
    assert "InterpolationResolutionError" not in line
    assert not list((tmp_path / "results").glob("*.json"))


def test_a_resumed_report_stage_skips_its_finished_tuned_runs(tmp_path: Path, monkeypatch) -> None:
    """The report stage writes `tuned` files; re-running the stage (the study resumes by run id) must find them
    and skip those points. It used to look for default and trial files only, so a resumed report stage would
    have trained every finished seed again."""
    from peftbench import sweeps
    from peftbench.results import write_result

    monkeypatch.setattr(sweeps, "is_multirun", lambda: True)
    base = ["method=lora", "study=tuned-test"]
    _write_trial(tmp_path, 2.0, "trial2")
    report = compose_config(
        [*base, "seed=4", "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}"], tmp_path
    )
    run_id = compute_run_id(report)
    assert sweeps.finished_point(report, run_id) is None  # not run yet

    finished = run_result("lora", 4, 0.8, variant="tuned", study="tuned-test")
    finished.run_id, finished.config = run_id, OmegaConf.to_container(report, resolve=True)
    finished.search = {"sweeper": "grid", "chosen": {"optimizer.lr_factor": 2.0}, "chosen_run_id": "trial2"}
    write_result(finished, tmp_path / "results")
    again = sweeps.finished_point(report, run_id)
    assert again is not None and again.variant == "tuned" and again.test == finished.test
    assert len(list((tmp_path / "results").glob("*.json"))) == 2  # skipped: no copy written either


def test_a_report_waits_until_its_search_has_run_its_whole_grid(tmp_path: Path) -> None:
    """Every method gets the same number of trials: a report stage started while a study's grid is half run
    (the grid on record in the trials' search.space) stops with one line naming the missing points, instead of
    choosing from the trials that happen to exist. A diverged trial counts as run (it is evidence)."""
    from peftbench.search import resolve_choices

    base = ["method=lora", "study=tuned-test"]
    space = {"optimizer.lr_factor": "0.5,1.0,2.0"}
    for factor, status in ((0.5, "ok"), (2.0, "diverged")):
        _write_trial(tmp_path, factor, f"trial{factor}", status=status, space=space)
    report = compose_config(
        [*base, "seed=1", "optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}"], tmp_path
    )
    with pytest.raises(ConfigError, match=r"2 of its 3 grid points .*missing optimizer.lr_factor=1.0"):
        resolve_choices(report)

    _write_trial(tmp_path, 1.0, "trial1.0", val=0.95, space=space)
    resolve_choices(report)  # the whole grid has run: the choice stands
    assert report.optimizer.lr_factor == 1.0


def test_a_choice_is_carried_to_another_budget_only_when_the_stage_says_so(tmp_path: Path) -> None:
    """The convergence check runs each method's choice (made at one budget) at 4x the steps. A report stage at
    another budget borrows nothing by accident (the search ran another configuration); sweep.transfer names
    the keys that may differ, and the result records what they were in the search."""
    from peftbench.search import report_record, resolve_choices

    base = ["method=lora", "study=tuned-test"]
    searched = _write_trial(tmp_path, 2.0, "trial2")
    chosen = ["optimizer.lr_factor=${peftbench.chosen:optimizer.lr_factor}", "seed=1"]
    longer = compose_config([*base, *chosen, f"task.max_steps={4 * searched.task.max_steps}"], tmp_path)
    with pytest.raises(ConfigError, match="ran another configuration"):
        resolve_choices(longer)
    carried = compose_config(
        [*base, *chosen, f"task.max_steps={4 * searched.task.max_steps}", "sweep.transfer=[task.max_steps]"],
        tmp_path,
    )
    resolve_choices(carried)
    assert carried.optimizer.lr_factor == 2.0
    assert report_record(carried)["transfer"] == {"task.max_steps": searched.task.max_steps}
    other = compose_config(
        [*base, *chosen, "task.max_steps=3", "method.peft_config.r=4", "sweep.transfer=[task.max_steps]"],
        tmp_path,
    )
    with pytest.raises(ConfigError, match="ran another configuration"):
        resolve_choices(other)  # only the named keys may differ


@pytest.mark.parametrize(
    "stage",
    sorted(p.stem for p in (experiments_dir() / "compare" / "tuned").glob("*.yaml") if p.stem != "protocol"),
)
def test_a_study_stage_composes_the_same_run_on_any_cpu(stage: str, monkeypatch) -> None:
    """The study resumes on whatever machine a session gets. Were its precision left to auto, a CPU without
    native bf16 would compose 32-true: a new config, so every finished point would look unrun and a new
    method's search would train at another precision than the rest of the study."""
    import torch

    import peftbench.config as config_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    composed = {}
    for native in (True, False):
        monkeypatch.setattr(config_module, "cpu_has_bf16", lambda native=native: native)
        cfg = compose_config([f"experiments=compare/tuned/{stage}", "method=lora"], tiny=False)
        composed[native] = OmegaConf.select(cfg, "trainer.precision")
    assert composed[True] == composed[False] == "bf16-mixed"
