"""``peftbench-reproduce`` and ``peftbench-compare``.

``peftbench-reproduce <experiment>`` runs a reproduction as Hydra multiruns (one per stage and arm,
over its tasks x seeds) through the normal sweep machinery: each job in its own process, failures
recorded and the sweep going on, finished points skipped on a re-run. Stages run in init_from order
(RTE after MNLI when RTE starts from the MNLI run). It then writes the compare report.

``peftbench-compare <experiment>`` writes the reported-vs-measured report from the results alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from peftbench import console
from peftbench.console import entry_point
from peftbench.errors import ConfigError
from peftbench.reproduction.compare import Comparison, compare, recipe_differences, to_markdown, write_outputs
from peftbench.reproduction.plan import Plan, build_plan, compose_experiment
from peftbench.reproduction.reported import check_against_plan, load_reported
from peftbench.results import (
    RunResult,
    config_fingerprint,
    fingerprint_config,
    identity_config,
    load_results,
    skip_lines,
)

log = logging.getLogger("peftbench")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="a reproduction under experiments/, e.g. lora_glue_base/table2")
    parser.add_argument("--results", help="results folder (default: the experiment's paths.results_dir)")
    parser.add_argument("--out", help="where compare.md/.csv/.json go (default: beside the results folder)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the experiment's offline stand-ins (reproduction.dry_run: tiny models, fixtures, short runs)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="further Hydra overrides for every job, e.g. trainer=cpu"
    )


def _differences(
    plan: Plan, comparison: Comparison, results: list[RunResult], overrides: Sequence[str]
) -> list[str]:
    """For each measured arm, one of the runs it was measured on against the config this reproduction would run
    for that arm and task (composed, never run): how another study's runs differ from the reproduction's."""
    arms = {arm.label: arm for arm in plan.arms}
    pairs = []
    for summary in comparison.arms:
        arm = arms.get(summary.method)
        run = next(
            (
                r
                for r in results
                if (r.task, r.method) == (summary.task, summary.method)
                and r.status == "ok"
                and config_fingerprint(r) == summary.fingerprint
            ),
            None,
        )
        if arm is None or run is None:
            continue
        own = compose_experiment(
            plan.experiment,
            [*arm.cli(), f"task={summary.task}", f"seed={run.seed}", *plan.dry_run, *overrides],
        )
        pairs.append(
            (arm.label, fingerprint_config(run.config or {}), fingerprint_config(identity_config(own)))
        )
    return recipe_differences(pairs)


def run_compare(
    plan: Plan,
    results_dir: str,
    out: str | None,
    dry_run: bool,
    study: str | None = None,
    prefer: str | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    reported = load_reported(plan.reported_path)
    check_against_plan(reported, plan.task_metrics, plan.arm_tasks, plan.model)
    results, skipped = load_results(results_dir)
    for line in skip_lines(skipped):
        print(f"warning: {line}", file=sys.stderr)
    study_results = [r for r in results if r.study == (study or plan.study)]
    comparison = compare(
        reported,
        study_results,
        plan.experiment,
        dry_run=dry_run,
        skipped=[f"{path}: {reason}" for path, reason in skipped],
        prefer=prefer,
    )
    if study and study != plan.study:
        comparison.measured_study = study
        comparison.differences = _differences(plan, comparison, study_results, overrides)
    target = Path(out) if out else Path(results_dir).parent
    paths = write_outputs(comparison, target)
    print(to_markdown(comparison))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return paths[0]


COMPARE_EXAMPLES = (
    "peftbench-compare cpu_minilm_mr/claims --out /tmp/compare  # reported vs the committed CPU runs",
    "peftbench-compare cpu_minilm_mr/claims --results results/compare_all_methods_tuned/runs "
    "--study compare_all_methods_tuned --prefer tuned --out /tmp/claims  # the claims on another study's runs",
)
REPRODUCE_EXAMPLES = (
    "peftbench-reproduce lora_glue_base/table2 --plan  # the stages and their commands, nothing run",
    "peftbench-reproduce cpu_minilm_mr/claims --plan",
)


@entry_point
def compare_main(argv: Sequence[str] | None = None) -> int:
    parser = console.parser("peftbench-compare", __doc__.split("\n\n")[2], COMPARE_EXAMPLES)
    _common(parser)
    parser.add_argument(
        "--study",
        help="judge the runs of this study (a result's `study`) instead of the experiment's: e.g. its claims on "
        "a later study's runs; use with --results",
    )
    parser.add_argument(
        "--prefer",
        choices=("tuned", "default"),
        help="an arm's runs of this variant stand for it where it has them (tuned: each method at its search's "
        "choice; an arm nobody searched keeps its own runs)",
    )
    args = parser.parse_intermixed_args(argv)
    try:
        plan = build_plan(args.experiment, args.overrides, dry_run=args.dry_run)
        run_compare(
            plan,
            args.results or plan.results_dir,
            args.out,
            args.dry_run,
            args.study,
            args.prefer,
            args.overrides,
        )
    except ConfigError as error:
        print(f"peftbench-compare: {error}", file=sys.stderr)
        return 2
    return 0


def stage_command(plan: Plan, stage_index: int, overrides: Sequence[str]) -> list[str]:
    stage = plan.stages[stage_index]
    return [
        sys.executable,
        "-m",
        "peftbench.train",
        "-m",
        f"experiments={plan.experiment}",
        *stage.arm.cli(),
        f"task={','.join(stage.tasks)}",
        f"seed={','.join(str(s) for s in plan.seeds)}",
        *plan.dry_run,
        *overrides,
    ]


def shell_line(command: Sequence[str]) -> str:
    """``command`` (``python -m peftbench.train ...``) as a line bash runs unchanged: ``peftbench-train ...``."""
    return shlex.join(["peftbench-train", *command[3:]])


@entry_point
def reproduce_main(argv: Sequence[str] | None = None) -> int:
    parser = console.parser("peftbench-reproduce", __doc__.split("\n\n")[1], REPRODUCE_EXAMPLES)
    _common(parser)
    parser.add_argument("--tasks", help="a subset of the experiment's tasks, comma-separated")
    parser.add_argument("--arms", help="a subset of its arms (method labels), comma-separated")
    parser.add_argument("--seeds", help="seeds instead of the experiment's, comma-separated")
    parser.add_argument(
        "--plan", action="store_true", help="print the stages and their commands, run nothing"
    )
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.results:
        overrides.append(f"paths.results_dir={args.results}")
    try:
        seeds = [int(s) for s in _csv(args.seeds)] if args.seeds else None
        plan = build_plan(
            args.experiment,
            overrides,
            args.dry_run,
            tasks=_csv(args.tasks),
            arms=_csv(args.arms),
            seeds=seeds,
        )
        # The expectations are checked before anything runs: a typo there would waste the whole run.
        check_against_plan(load_reported(plan.reported_path), plan.task_metrics, plan.arm_tasks, plan.model)
    except (ConfigError, ValueError) as error:
        print(f"peftbench-reproduce: {error}", file=sys.stderr)
        return 2
    print(
        f"{plan.experiment}: {len(plan.arms)} arms x {len(plan.tasks)} tasks x {len(plan.seeds)} seeds "
        f"in {len(plan.stages)} multiruns; results in {plan.results_dir}"
    )
    commands = [stage_command(plan, i, overrides) for i in range(len(plan.stages))]
    for stage, command in zip(plan.stages, commands, strict=True):
        # As a shell would take it: the console script, and each argument quoted where the shell would read it
        # (`${recipe.lora_alpha}` is Hydra's interpolation, not the shell's).
        print(f"  {stage.describe()}\n    {shell_line(command)}")
    if args.plan:
        return 0
    started = time.monotonic()
    failed = []
    for stage, command in zip(plan.stages, commands, strict=True):
        print(f"\n=== {stage.describe()} ===", flush=True)
        code = subprocess.run(command, env=os.environ.copy(), check=False).returncode
        if code != 0:  # jobs record their own failures; a non-zero launcher exit is worth saying
            failed.append(stage.describe())
            print(f"{stage.describe()}: the multirun exited with {code}", file=sys.stderr)
    print(f"\nall stages done in {time.monotonic() - started:.0f} s")
    try:
        run_compare(plan, plan.results_dir, args.out, args.dry_run)
    except ConfigError as error:
        print(f"peftbench-reproduce: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(reproduce_main())
