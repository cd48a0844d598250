"""A reproduction experiment as a plan: which arms, tasks and seeds, in which order.

A reproduction is an ordinary experiment config (``experiments/<paper>/<name>.yaml``) with a
``reproduction:`` block::

    reproduction:
      paper: "Hu et al. 2021, ..."          # citation
      reported: reported.yaml               # expectations, relative to the experiment's folder
      tasks: [mnli, sst2, rte]              # tasks run
      seeds: [1, 2, 3, 4, 5]                # training seeds
      arms:                                 # what is compared: label -> method group choice + overrides
        lora: {method: lora}
        adpt_h_r8: {method: houlsby, overrides: [method.bottleneck_size=8]}
      dry_run: [model=tiny-bert, task.use_fixture=true, task.epochs=1]  # offline stand-ins

An arm's label becomes ``method.name`` (the ``method`` field of its results), so two sizes of one
method are two arms. A job whose resolved ``init_from`` selects another task of the same arm runs
in a later stage than that task: the plan orders the stages so every source exists first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import peftbench.config  # noqa: F401  (registers the config resolvers)
from peftbench.errors import ConfigError
from peftbench.resources import compose, experiments_dir

ARM_KEYS = ("method", "overrides", "tasks", "dry_run")
BLOCK_KEYS = ("paper", "reported", "tasks", "seeds", "arms", "dry_run")


@dataclass
class Arm:
    label: str
    method: str  # conf/method/ choice
    overrides: list[str] = field(default_factory=list)
    tasks: list[str] | None = None  # a subset of the experiment's tasks (None: all of them)
    dry_run: list[str] = field(default_factory=list)  # this arm's extra stand-in overrides (--dry-run only)
    dry: bool = False  # set by the plan for a dry run

    def cli(self) -> list[str]:
        return [
            f"method={self.method}",
            f"method.name={self.label}",
            *self.overrides,
            *(self.dry_run if self.dry else []),
        ]


@dataclass
class Stage:
    """One multirun: one arm over some tasks x every seed."""

    depth: int
    arm: Arm
    tasks: list[str]

    def describe(self) -> str:
        return f"stage {self.depth}: {self.arm.label} on {', '.join(self.tasks)}"


@dataclass
class Plan:
    experiment: str
    reported_path: Path
    tasks: list[str]
    seeds: list[int]
    arms: list[Arm]
    dry_run: list[str]
    study: str
    model: str
    results_dir: str
    task_metrics: dict[str, list[str]] = field(default_factory=dict)  # every declared task -> its metrics
    stages: list[Stage] = field(default_factory=list)
    # Every declared arm -> the tasks it runs, over the whole experiment: what reported rows and claims may
    # name. A subset run (--arms, --tasks) leaves the rest "not run" rather than making them errors.
    arm_tasks: dict[str, list[str]] = field(default_factory=dict)
    # (arm, task) -> the task whose run it starts from (init_from), or None.
    sources: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def tasks_of(self, arm: Arm) -> list[str]:
        return [t for t in self.tasks if arm.tasks is None or t in arm.tasks]


def compose_experiment(experiment: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``peftbench-train experiments=<experiment> <overrides>`` would run."""
    return compose([f"experiments={experiment}", *overrides])


def experiment_file(experiment: str) -> Path:
    path = experiments_dir() / f"{experiment}.yaml"
    if not path.is_file():
        known = sorted(
            str(p.relative_to(experiments_dir()).with_suffix(""))
            for p in experiments_dir().rglob("*.yaml")
            if p.name != "reported.yaml"
        )
        raise ConfigError(f"experiment {experiment!r}: no {path}; known: {', '.join(known)}")
    return path


def _block(cfg: DictConfig, experiment: str) -> dict[str, Any]:
    block = OmegaConf.to_container(cfg.reproduction, resolve=False) if cfg.get("reproduction") else None
    if not block:
        raise ConfigError(f"experiment {experiment}: no `reproduction:` block; it is not a reproduction")
    unknown = sorted(set(block) - set(BLOCK_KEYS))
    if unknown:
        raise ConfigError(f"reproduction.{unknown[0]}: unknown key; allowed: {', '.join(BLOCK_KEYS)}")
    for key in ("paper", "reported", "tasks", "seeds", "arms"):
        if not block.get(key):
            raise ConfigError(f"reproduction.{key}: missing in experiment {experiment}")
    return block


def build_plan(
    experiment: str,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    tasks: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> Plan:
    """Compose the experiment for every (arm, task), read its init_from, and order the stages."""
    folder = experiment_file(experiment).parent
    base = compose_experiment(experiment)
    block = _block(base, experiment)
    all_arms = []
    for label, spec in block["arms"].items():
        spec = spec or {}
        unknown = sorted(set(spec) - set(ARM_KEYS))
        if unknown:
            raise ConfigError(
                f"reproduction.arms.{label}.{unknown[0]}: unknown key; allowed: {', '.join(ARM_KEYS)}"
            )
        arm_tasks = [str(t) for t in spec["tasks"]] if spec.get("tasks") else None
        stray = sorted(set(arm_tasks or []) - {str(t) for t in block["tasks"]})
        if stray:
            raise ConfigError(f"reproduction.arms.{label}.tasks: {stray} not in reproduction.tasks")
        overrides_of_arm = [str(o) for o in spec.get("overrides") or []]
        arm_dry_run = [str(o) for o in spec.get("dry_run") or []]
        all_arms.append(
            Arm(str(label), str(spec.get("method", label)), overrides_of_arm, arm_tasks, arm_dry_run, dry_run)
        )
    chosen_arms = _subset("arm", [a.label for a in all_arms], arms)
    chosen_tasks = _subset("task", [str(t) for t in block["tasks"]], tasks)
    stand_ins = [str(o) for o in block.get("dry_run") or []] if dry_run else []
    extra = [*stand_ins, *overrides]
    plan = Plan(
        experiment=experiment,
        reported_path=folder / str(block["reported"]),
        tasks=chosen_tasks,
        seeds=[int(s) for s in (seeds or block["seeds"])],
        arms=[a for a in all_arms if a.label in chosen_arms],
        dry_run=stand_ins,
        study=str(base.get("study")),
        model=str(base.model.name),  # the paper's model (a dry run swaps in a stand-in)
        results_dir="",
    )
    declared_tasks = [str(t) for t in block["tasks"]]
    plan.arm_tasks = {
        a.label: [t for t in declared_tasks if a.tasks is None or t in a.tasks] for a in all_arms
    }
    for task in declared_tasks:  # metric names do not depend on the arm: one composition per task
        arm = next(a for a in all_arms if task in plan.arm_tasks[a.label])
        plan.task_metrics[task] = sorted(
            _metric_names(compose_experiment(experiment, [*arm.cli(), f"task={task}"]))
        )
    for arm in plan.arms:
        for task in plan.tasks_of(arm):
            cfg = compose_experiment(experiment, [*arm.cli(), f"task={task}", *extra])
            if not plan.results_dir:
                plan.results_dir = str(cfg.paths.results_dir)
            init = cfg.get("init_from")
            source = None
            if isinstance(init, DictConfig) and init.get("task") and init.get("run") is None:
                source = str(init.task)
                if source == task:
                    raise ConfigError(f"experiment {experiment}: {arm.label}/{task} init_from selects itself")
                # A subset run (--tasks) without the source task: that run must exist already.
                if source not in plan.tasks_of(arm):
                    source = None
            plan.sources[(arm.label, task)] = source
    depth_of = {key: _depth(key, plan.sources, set()) for key in plan.sources}
    for arm in plan.arms:
        for depth in sorted({depth_of[(arm.label, t)] for t in plan.tasks_of(arm)}):
            tasks_here = [t for t in plan.tasks_of(arm) if depth_of[(arm.label, t)] == depth]
            plan.stages.append(Stage(depth, arm, tasks_here))
    plan.stages.sort(key=lambda s: s.depth)  # stable: arms keep their order within a depth
    return plan


def _metric_names(cfg: DictConfig) -> list[str]:
    from peftbench.tasks.config import TaskConfig

    return list(TaskConfig.from_cfg(cfg.task).metrics)


def _depth(key: tuple[str, str], sources: dict[tuple[str, str], str | None], seen: set) -> int:
    if key in seen:
        raise ConfigError(f"reproduction: init_from forms a cycle through {key[0]}/{key[1]}")
    source = sources[key]
    if source is None:
        return 0
    return 1 + _depth((key[0], source), sources, seen | {key})


def _subset(kind: str, available: list[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ConfigError(
            f"--{kind}s {','.join(unknown)}: not in the experiment; allowed {', '.join(available)}"
        )
    return [a for a in available if a in wanted]
