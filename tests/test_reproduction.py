"""Paper reproductions: reported.yaml, claims, verdicts, init_from, the paper's selection rule, epoch budgets,
every reproduction experiment's plan, and a dry run of the LoRA Table 2 recipe to its compare report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from peftbench import init_from
from peftbench.errors import ConfigError
from peftbench.reproduction.cli import compare_main, reproduce_main
from peftbench.reproduction.compare import compare, to_csv, to_markdown, write_outputs
from peftbench.reproduction.plan import build_plan
from peftbench.reproduction.reported import check_against_plan, load_reported, parse_claim
from peftbench.resources import experiments_dir
from peftbench.results import RunResult, compute_run_id, identity_config, load_results
from peftbench.sweeps import describe_error, failure_status
from peftbench.train import prepare, run

REPRODUCTIONS = sorted(
    str(p.relative_to(experiments_dir()).with_suffix(""))
    for p in experiments_dir().rglob("*.yaml")
    if p.name != "reported.yaml" and "\nreproduction:" in p.read_text()
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reported.yaml"
    path.write_text(text)
    return path


def _result(method: str, seed: int, task: str, score: float, rule: str = "best_validation") -> RunResult:
    return RunResult(
        run_id=f"{method}{seed}{task}",
        task=task,
        model="m",
        method=method,
        seed=seed,
        study="s",
        test={"test/accuracy": score},
        selection={"rule": rule},
        ended_at=f"2026-01-0{seed}",
    )


REPORTED = """
paper: "A paper"
model: m
aggregation: median
seeds: 3
scale: 100
tolerance: 1.0
conventions: ["dev split reported"]
rows:
  - {task: t, method: lora, metric: accuracy, reported: 80.0, source: Table 2}
  - {task: t, method: bitfit, metric: accuracy, reported: 90.0}
  - {task: t, method: full, metric: accuracy, reported: 70.0}
  - {task: t, method: adapter_drop, metric: accuracy, reported: 75.0, run: false}
  - {task: t, method: ia3, metric: accuracy, reported: 60.0}
claims:
  - {claim: "lora >= bitfit", task: t, metric: accuracy}
  - {claim: "|lora - full| <= 1.0", task: t, metric: accuracy}
  - {claim: "lora - bitfit >= -10", task: t, metric: accuracy}
  - {claim: "lora > 79.5", task: t, metric: accuracy}
  - {claim: "ia3 >= lora", task: t, metric: accuracy}
"""


# --- reported.yaml ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("lora >= bitfit", ("lora", None, False, ">=", "bitfit")),
        ("|lora - full| <= 1.0", ("lora", "full", True, "<=", "1.0")),
        ("lora-full>2", ("lora", "full", False, ">", "2")),
        ("lora < 78", ("lora", None, False, "<", "78")),
    ],
)
def test_claims_parse(text: str, parts: tuple) -> None:
    parsed = parse_claim(text, "claims[0].claim")
    assert (parsed["left"], parsed["minus"], parsed["absolute"], parsed["operator"], parsed["right"]) == parts


@pytest.mark.parametrize("text", ["lora == full", "|lora| <= 1", "lora >=", "78 >= lora", "lora ~ full"])
def test_bad_claims_fail_with_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_claim(text, "claims[0].claim")
    assert "claims[0].claim" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "paper: x\nrows: [{task: t, method: m, metric: a, reported: 1, colour: red}]",
            "rows[0].colour: unknown key",
        ),
        ("paper: x\nrows: [{task: t, method: m, metric: a}]", "rows[0].reported: missing"),
        (
            "paper: x\naggregation: mode\nrows: [{task: t, method: m, metric: a, reported: 1}]",
            "aggregation='mode'",
        ),
        ("rows: [{task: t, method: m, metric: a, reported: 1}]", "paper: missing"),
        ("paper: x", "no rows and no claims"),
        ('paper: x\nrows: [{task: t, method: m, metric: a, reported: "high"}]', "rows[0].reported='high'"),
    ],
)
def test_bad_reported_files_fail_with_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_reported(_write(tmp_path, text))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_reported_file_naming_what_the_experiment_does_not_run_lists_every_mismatch(tmp_path: Path) -> None:
    reported = load_reported(_write(tmp_path, REPORTED))
    with pytest.raises(ConfigError) as error:
        check_against_plan(reported, {"t": ["f1"], "u": ["accuracy"]}, {"lora": ["t"], "full": ["u"]}, "m")
    message = str(error.value)
    for fragment in (
        "metric 'accuracy' not among task t's metrics ['f1']",
        "method 'bitfit' not in the experiment's methods",
        "method 'full' does not run task 't'",
        "method 'ia3' not in",
    ):
        assert fragment in message
    assert "adapter_drop" not in message  # a reference row is never run, so never checked
    with pytest.raises(ConfigError, match="model 'm', but the experiment runs 'other'"):
        check_against_plan(
            reported, {"t": ["accuracy"]}, {a: ["t"] for a in ("lora", "bitfit", "full", "ia3")}, "other"
        )


# --- verdicts ------------------------------------------------------------------------------------------------
def test_verdicts_use_the_papers_aggregation_and_flag_the_papers_selection_rule(tmp_path: Path) -> None:
    reported = load_reported(_write(tmp_path, REPORTED))
    lora = [0.79, 0.805, 0.95]  # median 80.5: reproduced (within 1); the mean (85.2) would not be
    results = [_result("lora", s, "t", v, rule="reported_split") for s, v in enumerate(lora, 1)]
    results += [_result("bitfit", s, "t", v) for s, v in enumerate([0.80, 0.81, 0.82], 1)]  # 81 < 90: below
    results += [
        _result("full", s, "t", v) for s, v in enumerate([0.80, 0.80], 1)
    ]  # 80 > 70: above, 2 of 3 seeds
    results.append(_result("other", 1, "t", 0.1))  # not in the file: ignored
    comparison = compare(reported, results, "exp")
    rows = {row.method: row for row in comparison.rows}
    assert rows["lora"].measured == pytest.approx(80.5)
    assert rows["lora"].mean == pytest.approx(statistics.fmean(v * 100 for v in lora))
    assert rows["lora"].std == pytest.approx(statistics.stdev(v * 100 for v in lora))
    assert (rows["lora"].n, rows["lora"].verdict) == (3, "reproduced")
    assert rows["lora"].difference == pytest.approx(0.5)
    assert "selected on the reported split (paper's rule)" in rows["lora"].flags
    assert rows["bitfit"].verdict == "below" and rows["bitfit"].difference == pytest.approx(-9.0)
    assert rows["full"].verdict == "above" and "2 of 3 seeds" in rows["full"].flags
    assert rows["adapter_drop"].verdict == "not run (reference)"
    assert rows["ia3"].verdict == "not run (no result)"
    claims = {claim.claim: claim for claim in comparison.claims}
    assert claims["lora >= bitfit"].verdict == "fails"  # 80.5 < 81
    assert claims["|lora - full| <= 1.0"].verdict == "holds" and claims[
        "|lora - full| <= 1.0"
    ].left_value == pytest.approx(0.5)
    assert claims["lora - bitfit >= -10"].verdict == "holds"
    assert claims["lora > 79.5"].verdict == "holds"
    assert claims["ia3 >= lora"].verdict == "not run"

    markdown = to_markdown(comparison)
    assert "| Table 2 | lora | t | accuracy | 80.0 | 80.5 |" in markdown
    assert "dev split reported" in markdown and "reproduced [selected on the reported split" in markdown
    assert to_csv(comparison).count("\n") == 1 + len(comparison.rows) + len(comparison.claims)
    paths = write_outputs(comparison, tmp_path / "out")
    assert json.loads(paths[2].read_text())["rows"][0]["verdict"] == "reproduced"


def test_a_newer_result_of_the_same_seed_replaces_the_older_one(tmp_path: Path) -> None:
    reported = load_reported(_write(tmp_path, REPORTED))
    old, new = _result("lora", 1, "t", 0.5), _result("lora", 1, "t", 0.8)
    old.ended_at, new.ended_at = "2026-01-01", "2026-02-01"
    row = next(r for r in compare(reported, [new, old], "exp").rows if r.method == "lora")
    assert (row.n, row.measured) == (1, pytest.approx(80.0))


# --- init_from -------------------------------------------------------------------------------------------------
def _lora_run(make_cfg, *extra: str) -> RunResult:
    return run(make_cfg("method=lora", "debug=fast_dev_run", "inference.enabled=false", *extra))


def test_init_from_loads_the_earlier_runs_adapter_by_run_id_and_by_selection(
    make_cfg, tmp_path: Path
) -> None:
    source = _lora_run(make_cfg, "seed=3")
    weights = Path(source.provenance["trainable_weights"])
    assert weights.is_file()
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(weights))
    for spelling in (source.run_id, "{task: synthetic, seed: 3}", str(weights)):
        cfg = make_cfg("method=lora", f"init_from={spelling}")
        prepared = prepare(cfg, init_source=init_from.resolve(cfg))
        state = prepared.method.trainable_state_dict(prepared.module.model)
        loaded = {k for k, v in saved.items() if torch.equal(state[k], v)}
        adapters = {k for k in saved if "lora_" in k}
        assert adapters <= loaded, spelling  # every adapter tensor arrived
        record = prepared.init_record
        assert record["loaded_tensors"] >= len(adapters)
        if spelling != str(weights):  # a run found by id or selection: same task, so the head comes too
            assert record["run_id"] == source.run_id and record["include_head"] is True
            assert saved.keys() <= loaded


def test_init_from_skips_the_head_of_another_task_and_records_it(make_cfg) -> None:
    source = _lora_run(make_cfg)
    source_path = Path(source.provenance["result_path"])
    cfg = make_cfg("method=lora", f"init_from={source_path}", "task.name=other_task")
    prepared = prepare(cfg, init_source=init_from.resolve(cfg))
    skipped = prepared.init_record["skipped"]
    assert skipped and all("task head" in reason for reason in skipped.values())
    assert all("classifier" in name for name in skipped)


@pytest.mark.parametrize(
    ("spelling", "fragment"),
    [
        ("0123456789ab", "no result with status ok and this run id"),
        ("not-a-run", "expected a 12-hex-digit run id"),
        ("missing.safetensors", "no such file"),
        ("{task: mnli}", "no ok result with task=mnli"),
        ("{colour: red}", "init_from.colour: unknown key"),
        ("{run: 0123456789ab, task: mnli}", "either `run` or selection keys"),
    ],
)
def test_a_missing_or_malformed_init_from_stops_before_any_model_loads(
    make_cfg, spelling: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        run(make_cfg(f"init_from={spelling}", "debug=fast_dev_run"))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_init_from_refuses_weights_of_another_method(make_cfg) -> None:
    source = run(make_cfg("method=ia3", "debug=fast_dev_run", "inference.enabled=false"))
    with pytest.raises(ConfigError, match="nothing in .* fits this model"):
        run(make_cfg("method=lora", f"init_from={source.run_id}", "debug=fast_dev_run"))


# --- selection rule and epoch budgets -----------------------------------------------------------------------
def test_reported_split_selection_is_refused_outside_reproductions(make_cfg) -> None:
    with pytest.raises(ConfigError, match="only paper reproductions"):
        run(make_cfg("task.selection=reported_split", "debug=fast_dev_run"))


def test_reported_split_selection_validates_on_the_reported_split_and_trains_on_all_of_train(
    make_cfg,
) -> None:
    default = prepare(make_cfg("method=head_only")).datamodule
    paper = prepare(
        make_cfg("method=head_only", "task.selection=reported_split", "reproduction={paper: x}")
    ).datamodule
    assert paper.datasets["validation"]["input_ids"] == paper.datasets["test"]["input_ids"]
    assert default.datasets["test"]["input_ids"] == paper.datasets["test"]["input_ids"]  # same reported split
    sizes, paper_sizes = default.split_sizes(), paper.split_sizes()
    assert paper_sizes["train"] == sizes["train"] + sizes["validation"]


def test_a_run_that_selected_on_the_reported_split_says_so(make_cfg) -> None:
    result = run(make_cfg("task.selection=reported_split", "reproduction={paper: x}", "task.max_steps=2",
                          "task.val_every_n_steps=1", "inference.enabled=false", "print_summary=false"))  # fmt: skip
    assert result.selection["rule"] == "reported_split"


def test_epochs_become_a_step_budget_with_validation_once_per_epoch(make_cfg) -> None:
    cfg = make_cfg(
        "method=head_only", "task.epochs=3", "task.batch_size=8", "trainer.accumulate_grad_batches=2"
    )
    prepared = prepare(cfg)
    rows = prepared.datamodule.split_sizes()["train"]
    batches = -(-rows // 8)
    assert prepared.epoch_budget == {
        "epochs": 3,
        "steps_per_epoch": -(-batches // 2),
        "max_steps": 3 * -(-batches // 2),
    }
    assert prepared.trainer.max_steps == prepared.epoch_budget["max_steps"]
    assert prepared.trainer.val_check_interval == batches
    with pytest.raises(ConfigError, match="task.epochs=0"):
        run(make_cfg("task.epochs=0"))


def test_new_knobs_at_their_neutral_value_keep_the_run_id() -> None:
    cfg = compose_config(["method=lora"])
    identity = identity_config(cfg)
    assert "epochs" not in identity["task"] and "selection" not in identity["task"]
    assert "init_from" not in identity and "reproduction" not in identity
    assert compute_run_id(compose_config(["method=lora", "task.epochs=2"])) != compute_run_id(cfg)


def test_an_interrupted_run_is_killed_not_ok() -> None:
    assert failure_status(KeyboardInterrupt()) == "killed"
    assert failure_status(SystemExit(1)) == "killed"
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    assert failure_status(SIGTERMException()) == "killed"  # what a SIGTERM'd Lightning run raises
    assert describe_error(SIGTERMException()) == (
        "SIGTERMException: interrupted (Ctrl-C or SIGTERM) before the run reached its test"
    )
    assert describe_error(ValueError("bad")) == "ValueError: bad"


# --- the reproduction experiments ------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", REPRODUCTIONS)
def test_every_reproduction_plans_and_its_reported_file_matches_what_it_runs(experiment: str) -> None:
    plan = build_plan(experiment)
    reported = load_reported(plan.reported_path)
    check_against_plan(reported, plan.task_metrics, plan.arm_tasks, plan.model)
    assert plan.stages and {t for stage in plan.stages for t in stage.tasks} == set(plan.tasks)
    order = [(stage.arm.label, task) for stage in plan.stages for task in stage.tasks]
    for index, (arm, task) in enumerate(order):  # a job starting from another task runs after it
        source = plan.sources[(arm, task)]
        if source is not None:
            assert (arm, source) in order[:index], f"{arm}/{task} runs before its source {source}"


def test_the_lora_recipe_starts_rte_from_mnli_and_selects_on_the_dev_split() -> None:
    cfg = compose_config(
        ["experiments=lora_glue_base/table2", "method=lora", "method.name=lora", "task=rte"], tiny=False
    )
    assert cfg.init_from.task == "mnli"
    assert (cfg.task.selection, cfg.task.epochs, cfg.task.batch_size, cfg.optimizer.lr) == (
        "reported_split",
        80,
        32,
        5e-4,
    )
    assert (
        cfg.task.max_length == 512
        and cfg.optimizer.weight_decay == 0.1
        and cfg.scheduler.warmup_ratio == 0.06
    )
    assert cfg.recipe.lora_alpha == 16  # the authors' scripts by default
    paper = compose_config(["experiments=lora_glue_base/table2", "recipe.lora_alpha_from=paper"], tiny=False)
    assert paper.recipe.lora_alpha == 8


def test_lora_table2_dry_run_reaches_a_compare_report(tmp_path: Path) -> None:
    """The real path on stand-ins: MNLI first, RTE from the MNLI run, then the report (one seed, two tasks)."""
    results, out = tmp_path / "runs", tmp_path / "report"
    code = reproduce_main(
        ["lora_glue_base/table2", "--dry-run", "--seeds", "1", "--tasks", "mnli,rte", "--arms", "lora,bitfit",
         "--results", str(results), "--out", str(out), "hydra/launcher=basic"]
    )  # fmt: skip
    assert code == 0
    finished, skipped = load_results(results)
    assert not skipped and {(r.method, r.task, r.status) for r in finished} == {
        (m, t, "ok") for m in ("lora", "bitfit") for t in ("mnli", "rte")
    }
    rte = next(r for r in finished if (r.method, r.task) == ("lora", "rte"))
    mnli = next(r for r in finished if (r.method, r.task) == ("lora", "mnli"))
    assert rte.provenance["init_from"]["run_id"] == mnli.run_id and rte.selection["rule"] == "reported_split"
    assert rte.budget["epochs"] == 1 and rte.config["task"]["max_steps"] == rte.budget["max_steps"]
    bitfit_rte = next(r for r in finished if (r.method, r.task) == ("bitfit", "rte"))
    assert "init_from" not in bitfit_rte.provenance  # the BitFit recipe starts from the pretrained model
    report = (out / "compare.md").read_text()
    assert "Dry run" in report and "| Table 2 | LoRA (0.3M) | rte | accuracy | 86.6 ± 0.7 |" in report
    assert "not run (no result)" in report  # the tasks this subset left out
    assert (
        compare_main(["lora_glue_base/table2", "--dry-run", "--results", str(results), "--out", str(out)])
        == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("experiment", REPRODUCTIONS)
def test_every_reproduction_dry_runs_end_to_end(experiment: str, tmp_path: Path) -> None:
    code = reproduce_main(
        [experiment, "--dry-run", "--seeds", "1", "--results", str(tmp_path / "runs"), "--out", str(tmp_path),
         "hydra/launcher=basic"]
    )  # fmt: skip
    assert code == 0
    finished, _ = load_results(tmp_path / "runs")
    assert finished and all(r.status == "ok" for r in finished), [
        (r.method, r.task, r.error) for r in finished
    ]
    assert (tmp_path / "compare.md").is_file()
