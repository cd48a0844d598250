"""Paper reproductions: reported.yaml, claims, verdicts, init_from, the paper's selection rule, epoch budgets,
every reproduction experiment's plan, and a dry run of the LoRA Table 2 recipe to its compare report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_result

from peftbench import init_from
from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.reproduction.cli import compare_main, reproduce_main
from peftbench.reproduction.compare import (
    claim_interval_verdict,
    compare,
    equivalence_verdict,
    margin_of,
    to_csv,
    to_markdown,
    write_outputs,
)
from peftbench.reproduction.plan import build_plan
from peftbench.reproduction.reported import check_against_plan, load_reported, parse_claim
from peftbench.resources import experiments_dir
from peftbench.results import (
    RunResult,
    compute_run_id,
    config_fingerprint,
    identity_config,
    load_results,
    write_result,
)
from peftbench.sweeps import describe_error, failure_status
from peftbench.train import run

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
    return run_result(method, seed, score, task=task, model="m", selection={"rule": rule})


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
def _with_predictions(result: RunResult, n_examples: int = 2000) -> RunResult:
    """Per-example predictions whose accuracy is the result's: the first round(acc * n) right, the rest wrong
    (shifted by the seed, so seeds err on different examples)."""
    right = round(result.test["test/accuracy"] * n_examples)
    labels = [i % 2 for i in range(n_examples)]
    shift = result.seed * 37
    wrong = {(i + shift) % n_examples for i in range(n_examples - right)}
    result.predictions = {
        "test": {"pred": [1 - y if i in wrong else y for i, y in enumerate(labels)], "label": labels}
    }
    return result


def _row(reported_text: str, results: list[RunResult], method: str = "lora"):
    return next(r for r in compare(load_reported(reported_text), results, "exp").rows if r.method == method)


def _file(
    tmp_path: Path, reported: float = 80.0, seeds: int = 3, aggregation: str = "mean", extra: str = ""
) -> Path:
    return _write(
        tmp_path,
        f"paper: p\nmodel: m\naggregation: {aggregation}\nseeds: {seeds}\ntolerance: 1.0\n"
        f"rows: [{{task: t, method: lora, metric: accuracy, reported: {reported}{extra}}}]\n",
    )


def test_verdicts_use_the_papers_aggregation_and_flag_the_papers_selection_rule(tmp_path: Path) -> None:
    reported = load_reported(_write(tmp_path, REPORTED))
    # median 80.5 (the mean, 85.2, would be far off); the spread makes it inconclusive
    lora = [0.79, 0.805, 0.95]
    results = [_result("lora", s, "t", v, rule="reported_split") for s, v in enumerate(lora, 1)]
    results += [_result("bitfit", s, "t", v) for s, v in enumerate([0.80, 0.81, 0.82], 1)]  # ~81 vs 90
    results += [_result("full", s, "t", v) for s, v in enumerate([0.80, 0.801], 1)]  # 80 vs 70, 2 of 3 seeds
    results.append(_result("other", 1, "t", 0.1))  # not in the file: ignored
    comparison = compare(reported, results, "exp")
    rows = {row.method: row for row in comparison.rows}
    assert rows["lora"].measured == pytest.approx(80.5)
    assert rows["lora"].mean == pytest.approx(statistics.fmean(v * 100 for v in lora))
    assert rows["lora"].std == pytest.approx(statistics.stdev(v * 100 for v in lora))
    assert (rows["lora"].n, rows["lora"].verdict) == (3, "inconclusive")
    assert rows["lora"].difference == pytest.approx(0.5)
    assert rows["lora"].low < 79.0 and rows["lora"].high > 81.0  # wider than the band: neither verdict
    assert "selected on the reported split (paper's rule)" in rows["lora"].flags
    assert rows["bitfit"].verdict == "not reproduced" and rows["bitfit"].difference == pytest.approx(-9.0)
    assert rows["full"].verdict == "inconclusive" and "2 of 3 seeds" in rows["full"].flags
    assert any("at most inconclusive with 2 of the paper's 3 seeds" in f for f in rows["full"].flags)
    assert rows["adapter_drop"].verdict == "not run (reference)"
    assert rows["ia3"].verdict == "not run (no result)"
    claims = {claim.claim: claim for claim in comparison.claims}
    assert claims["lora >= bitfit"].left_value == pytest.approx(80.5 - 81.0)
    # a - b, signed, on the common seeds 1 and 2: median(79, 80.5) - median(80, 80.1)
    assert claims["|lora - full| <= 1.0"].left_value == pytest.approx(79.75 - 80.05)
    assert claims["|lora - full| <= 1.0"].seeds == [1, 2]
    assert claims["|lora - full| <= 1.0"].verdict == "inconclusive"
    assert claims["ia3 >= lora"].verdict == "not run"

    markdown = to_markdown(comparison)
    assert "| Table 2 | lora | t | accuracy | 80.0 | ±1.00 | 80.5 | [" in markdown
    assert "dev split reported" in markdown and "inconclusive [selected on the reported split" in markdown
    assert "sqrt(tolerance² + paper's ±²)" in markdown and "|measured - reported|" not in markdown
    assert "seed-only interval" in markdown  # these runs stored no predictions, and the report says so
    assert to_csv(comparison).count("\n") == 1 + len(comparison.rows) + len(comparison.claims)
    paths = write_outputs(comparison, tmp_path / "out")
    saved = json.loads(paths[2].read_text())["rows"][0]
    assert saved["verdict"] == "inconclusive" and saved["margin"] == 1.0 and saved["interval_method"]


def test_the_margin_combines_the_declared_tolerance_with_the_papers_spread(tmp_path: Path) -> None:
    assert margin_of(1.0, None) == 1.0
    assert margin_of(1.0, 0.7) == pytest.approx((1.0 + 0.49) ** 0.5)
    results = [_result("lora", s, "t", v) for s, v in enumerate([0.80, 0.801, 0.799], 1)]
    assert _row(_file(tmp_path, extra=", spread: 0.7"), results).margin == pytest.approx(1.2207, abs=1e-4)


def test_an_interval_that_straddles_the_band_edge_is_inconclusive(tmp_path: Path) -> None:
    # Mean 81.0, within 1 point of 80.2 (the old rule: reproduced); its interval crosses 81.2, the band's top.
    results = [_result("lora", s, "t", v) for s, v in enumerate([0.805, 0.81, 0.815], 1)]
    row = _row(_file(tmp_path, reported=80.2), results)
    assert row.verdict == "inconclusive"
    assert row.low < 81.2 < row.high and row.low > 79.2
    assert equivalence_verdict(79.5, 81.5, 80.2, 1.0) == "inconclusive"
    assert equivalence_verdict(79.5, 80.9, 80.2, 1.0) == "reproduced"
    assert equivalence_verdict(75.0, 79.1, 80.2, 1.0) == "not reproduced"


def test_a_tight_interval_outside_the_band_is_not_reproduced(tmp_path: Path) -> None:
    results = [_with_predictions(_result("lora", s, "t", v)) for s, v in enumerate([0.70, 0.701, 0.699], 1)]
    row = _row(_file(tmp_path, aggregation="median"), results)
    assert row.verdict == "not reproduced" and row.high < 79.0
    assert row.interval_method == "bootstrap over seeds x test examples"  # predictions stored


def test_fewer_seeds_than_the_paper_is_at_most_inconclusive(tmp_path: Path) -> None:
    # Three seeds within 0.1 of the figure: reproduced by the interval, but the paper's statistic is over 5.
    results = [_result("lora", s, "t", v) for s, v in enumerate([0.800, 0.801, 0.799], 1)]
    assert _row(_file(tmp_path, seeds=3), results).verdict == "reproduced"
    row = _row(_file(tmp_path, seeds=5), results)
    assert row.verdict == "inconclusive" and "3 of 5 seeds" in row.flags
    assert "at most inconclusive with 3 of the paper's 5 seeds (the interval alone: reproduced)" in row.flags


@pytest.mark.parametrize("score", [0.80, 0.50])
def test_one_seed_never_gets_a_verdict_beyond_inconclusive(tmp_path: Path, score: float) -> None:
    # The paper ran one seed too, and the test-example bootstrap gives an interval: still no seed spread.
    for result in ([_result("lora", 1, "t", score)], [_with_predictions(_result("lora", 1, "t", score))]):
        row = _row(_file(tmp_path, seeds=1, extra=", tolerance: 3.0"), result)
        assert row.n == 1 and row.verdict == "inconclusive"


def _configured(seed: int, lr: float, score: float, ended: str, run_id: str | None = None) -> RunResult:
    result = _result("lora", seed, "t", score)
    result.config = {"optimizer": {"lr": lr}, "seed": seed}
    result.ended_at, result.run_id = ended, run_id or f"lora{seed}lr{lr}"
    return result


def test_compare_keeps_one_configuration_per_arm(tmp_path: Path) -> None:
    file = _file(tmp_path)  # the mean: any stray seed would show
    three = [_configured(s, 5e-4, 0.80, f"2026-01-0{s}") for s in (1, 2, 3)]
    stray = _configured(
        1, 1e-5, 0.50, "2026-03-01"
    )  # newer, same seed, another lr: not a fourth seed, not seed 1
    row = _row(file, [*three, stray])
    assert (row.n, row.measured) == (3, pytest.approx(80.0)) and row.seeds == [1, 2, 3]
    assert row.fingerprint == config_fingerprint(three[0]) != config_fingerprint(stray)
    assert any(f.startswith("1 other configuration of this arm ignored") for f in row.flags)
    # As many seeds in each: the newest configuration is used; a duplicate file of one run id counts once.
    two_old = [_configured(s, 5e-4, 0.80, f"2026-01-0{s}") for s in (1, 2)]
    two_new = [_configured(s, 1e-5, 0.70, f"2026-02-0{s}") for s in (1, 2)]
    duplicate = _configured(2, 1e-5, 0.70, "2026-02-02")
    row = _row(file, [*two_old, *two_new, duplicate])
    assert (row.n, row.measured) == (2, pytest.approx(70.0))
    assert "1 duplicate run of a seed counted once" in row.flags


def test_a_newer_result_of_the_same_seed_replaces_the_older_one(tmp_path: Path) -> None:
    reported = load_reported(_write(tmp_path, REPORTED))
    old, new = _result("lora", 1, "t", 0.5), _result("lora", 1, "t", 0.8)
    old.ended_at, new.ended_at = "2026-01-01", "2026-02-01"
    row = next(r for r in compare(reported, [new, old], "exp").rows if r.method == "lora")
    assert (row.n, row.measured) == (1, pytest.approx(80.0))


# The committed cpu_minilm_mr runs (results/cpu_minilm_mr/runs), test accuracy per seed 1, 2, 3.
MINILM_MR = {"lora": [0.7625, 0.7675, 0.77875], "full": [0.79625, 0.775, 0.78875]}
CLAIMS = """
paper: p
model: m
aggregation: median
seeds: 3
claims:
  - {claim: "|lora - full| <= 2.0", task: t, metric: accuracy}
  - {claim: "lora >= 77.0", task: t, metric: accuracy}
  - {claim: "lora - full >= -10", task: t, metric: accuracy}
  - {claim: "full >= lora", task: t, metric: accuracy}
"""


def test_a_claim_that_fails_by_a_fraction_of_a_point_within_noise_is_inconclusive(tmp_path: Path) -> None:
    results = [_result(m, s, "t", v) for m, values in MINILM_MR.items() for s, v in enumerate(values, 1)]
    claims = {c.claim: c for c in compare(load_reported(_write(tmp_path, CLAIMS)), results, "exp").claims}
    close = claims["|lora - full| <= 2.0"]  # |76.75 - 78.875| = 2.125: "fails" by 0.13 under the old rule
    assert close.verdict == "inconclusive" and close.low < -2.0 < close.high
    assert close.left_value == pytest.approx(-2.125)
    below = claims["lora >= 77.0"]  # 76.75: "fails" by 0.25 under the old rule
    assert below.verdict == "inconclusive" and below.low < 77.0 < below.high
    assert claims["lora - full >= -10"].verdict == "holds" and claims["lora - full >= -10"].low > -10
    assert claims["full >= lora"].verdict in ("inconclusive", "holds")


def test_a_paired_claim_uses_the_common_seeds(tmp_path: Path) -> None:
    results = [_result(m, s, "t", v) for m, values in MINILM_MR.items() for s, v in enumerate(values, 1)]
    results.append(_result("full", 4, "t", 0.10))  # no lora partner: left out of the pairing
    claim = compare(load_reported(_write(tmp_path, CLAIMS)), results, "exp").claims[0]
    assert claim.left_value == pytest.approx(-2.125)  # the seed-4 outlier would move full's median otherwise
    assert claim.seeds == [1, 2, 3] and claim.n == {"lora": 3, "full": 4}
    assert any("paired on common seeds 1 2 3 (full seed 4 left out)" in f for f in claim.flags)


def test_a_claim_on_stored_predictions_is_paired_by_seed_and_example(tmp_path: Path) -> None:
    text = (
        "paper: p\nmodel: m\nseeds: 3\nclaims: [{claim: 'lora - full >= 5.0', task: t, metric: accuracy}]\n"
    )
    results = [_with_predictions(_result("lora", s, "t", v)) for s, v in enumerate([0.85, 0.86, 0.84], 1)]
    results += [_with_predictions(_result("full", s, "t", v)) for s, v in enumerate([0.60, 0.62, 0.61], 1)]
    claim = compare(load_reported(_write(tmp_path, text)), results, "exp").claims[0]
    assert claim.verdict == "holds" and claim.low > 5.0
    assert claim.interval_method == "paired bootstrap over seeds x test examples"
    assert claim.left_value == pytest.approx(85.0 - 61.0)


@pytest.mark.parametrize(
    ("interval", "operator", "x", "absolute", "verdict"),
    [
        ((5.5, 9.0), ">=", 5.0, False, "holds"),
        ((4.0, 9.0), ">=", 5.0, False, "inconclusive"),
        ((1.0, 4.9), ">=", 5.0, False, "fails"),
        ((1.0, 4.9), "<", 5.0, False, "holds"),
        ((-1.5, 1.9), "<=", 2.0, True, "holds"),
        ((-2.9, 1.0), "<=", 2.0, True, "inconclusive"),
        ((-5.0, -2.1), "<=", 2.0, True, "fails"),
        ((2.5, 4.0), ">=", 2.0, True, "holds"),
        ((-1.0, 1.0), ">=", 2.0, True, "fails"),
        ((None, None), ">=", 2.0, False, "inconclusive"),
    ],
)
def test_claim_verdicts_ask_the_whole_interval(
    interval: tuple, operator: str, x: float, absolute: bool, verdict: str
) -> None:
    assert claim_interval_verdict(*interval, operator, x, absolute) == verdict


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
        ("{colour: red}", "init_from.colour='red': unknown key"),
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


@pytest.mark.slow  # three stage processes (~1 min); the default suite checks plans, init_from and compare apart
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


def _bash_words(line: str) -> list[str]:
    """The arguments bash passes for ``line`` (after its first word)."""
    import shutil
    import subprocess

    rest = line.split(" ", 1)[1]
    printed = subprocess.run(
        [shutil.which("bash"), "-c", "printf '%s\\0' " + rest], capture_output=True, text=True, check=True
    )
    return printed.stdout.split("\0")[:-1]


def test_a_plan_line_is_a_command_bash_runs_unchanged() -> None:
    """Before: `${recipe.lora_alpha}` went out unquoted (bash: "bad substitution") after a bare `-m`."""
    from peftbench.reproduction.cli import shell_line

    args = [
        "-m",
        "experiments=x",
        "method.peft_config.lora_alpha=${recipe.lora_alpha}",
        "task=a,b",
        "n='q' $HOME",
    ]
    line = shell_line(["python", "-m", "peftbench.train", *args])
    assert line.startswith("peftbench-train -m ")
    assert _bash_words(line) == args


def test_plan_prints_the_commands_it_runs(capsys) -> None:
    from peftbench.reproduction.cli import stage_command

    experiment = "cpu_minilm_mr/claims"  # the cheapest plan to build; the quoting is tested above
    assert reproduce_main([experiment, "--plan"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    plan = build_plan(experiment)
    expected = [stage_command(plan, i, [])[3:] for i in range(len(plan.stages))]
    assert [_bash_words(line) for line in lines] == expected


def test_claims_judged_on_a_tuned_study_take_each_methods_search_choice(tmp_path: Path) -> None:
    """--prefer tuned: a method's tuned runs (its search's choice) stand for its arm beside its default runs;
    an arm nobody searched (here full) keeps its own runs. Without it the newest configuration would decide."""
    reported = load_reported(_write(tmp_path, CLAIMS))
    results = [_result("full", s, "t", v) for s, v in enumerate(MINILM_MR["full"], 1)]
    for seed, (default, tuned) in enumerate(zip([0.70, 0.71, 0.72], [0.80, 0.81, 0.82], strict=True), 1):
        results.append(_result("lora", seed, "t", default))
        better = _result("lora", seed, "t", tuned)
        better.run_id, better.variant = f"tuned{seed}", "tuned"
        better.search = {"sweeper": "grid", "chosen": {"optimizer.lr_factor": 0.4642}}
        better.config = {**better.config, "optimizer": {"lr_factor": 0.4642}}  # another configuration
        better.ended_at = "2025-01-01T00:00:00+00:00"  # older than the default runs: not why it is chosen
        results.append(better)
    lora = next(
        c for c in compare(reported, results, "exp", prefer="tuned").claims if c.claim == "lora >= 77.0"
    )
    assert lora.left_value == pytest.approx(81.0) and lora.verdict == "holds"
    assert any('variant tuned (its search chose {"optimizer.lr_factor": 0.4642})' in f for f in lora.flags)
    plain = next(c for c in compare(reported, results, "exp").claims if c.claim == "lora >= 77.0")
    assert plain.left_value == pytest.approx(71.0)  # the newest configuration: the default runs
    arms = {a.method: a for a in compare(reported, results, "exp", prefer="tuned").arms}
    assert arms["full"].n == 3 and not any("variant" in f for f in arms["full"].flags)


def test_claims_judged_on_another_studys_runs_list_how_their_recipe_differs(tmp_path: Path) -> None:
    """The report's conventions describe the reproduction's own runs. Judged on another study's runs (--study),
    it must say where those runs' configuration differs from the one the reproduction composes for the same
    arm; before, it printed the reproduction's conventions (250 steps, each arm at its own lr) as if they
    described 800-step runs at searched learning rates."""
    from peftbench.reproduction.plan import compose_experiment

    results = tmp_path / "runs"
    for arm in ("head_only", "full", "lora"):
        extra = ["optimizer.lr_factor=0.5"] if arm == "lora" else []
        cfg = compose_experiment(
            "cpu_minilm_mr/claims",
            [f"method={arm}", f"method.name={arm}", "task=mr", "task.max_steps=800", *extra],
        )
        for seed in (1, 2, 3):
            result = run_result(arm, seed, 0.8, task="mr", model="minilm", study="other")
            result.config = identity_config(cfg)
            write_result(result, results)
    out = tmp_path / "out"
    args = ["cpu_minilm_mr/claims", "--results", str(results), "--study", "other", "--out", str(out)]
    assert compare_main(args) == 0
    report = (out / "compare.md").read_text()
    assert "**Runs measured.**" in report and "study `other`" in report
    lines = [line for line in report.splitlines() if line.startswith("- `")]
    assert (
        "- `task.max_steps`: 800 in the runs measured, 250 in this reproduction (full, head_only, lora)"
        in lines
    )
    assert (
        "- `optimizer.lr_factor`: 0.5 in the runs measured, its default in this reproduction (lora)" in lines
    )
    assert not any("`study`" in line or "`reproduction." in line or "`recipe." in line for line in lines)
    assert json.loads((out / "compare.json").read_text())["measured_study"] == "other"


def test_runs_measured_points_at_conventions_only_where_the_report_prints_some(tmp_path: Path) -> None:
    comparison = compare(load_reported(_write(tmp_path, REPORTED)), [], "exp")
    comparison.measured_study = "other"
    assert "the conventions below describe" in to_markdown(comparison)
    comparison.conventions = []
    text = to_markdown(comparison)
    assert "not this reproduction's own. Their configuration matches" in text and "conventions" not in text
