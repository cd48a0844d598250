"""Every config file composes and validates (found by glob: a new YAML is tested without editing this file)."""

from __future__ import annotations

import pytest
from conftest import CONF, METHOD_NAMES, TASK_NAMES, compose_config
from omegaconf import OmegaConf

from peftbench.errors import ConfigError
from peftbench.models.backbone import ModelConfig
from peftbench.resources import experiments_dir
from peftbench.tasks.config import TaskConfig
from peftbench.train import build_method

YAML_GROUPS = sorted(p.parent.name for p in CONF.glob("*/*.yaml"))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_yaml_composes_and_builds(name: str) -> None:
    cfg = compose_config([f"method={name}"])
    assert cfg.method.name == name, "a method's name must equal its file name (it is the results label)"
    method = build_method(cfg.method)
    assert method.name == name
    assert cfg.method.get("paper"), f"method {name} names no paper"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_yaml_validates(name: str) -> None:
    cfg = compose_config([f"task={name}"])
    assert cfg.task.name == name
    task = TaskConfig.from_cfg(cfg.task)
    assert task.monitor.startswith("val/")


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_yaml_validates(name: str) -> None:
    cfg = compose_config([f"model={name}"])
    assert cfg.model.name == name
    ModelConfig.from_cfg(cfg.model)


@pytest.mark.parametrize(
    "experiment",
    sorted(
        str(p.relative_to(experiments_dir()).with_suffix(""))
        for p in experiments_dir().rglob("*.yaml")
        if p.name != "reported.yaml"
    ),
)
def test_experiment_composes(experiment: str) -> None:
    cfg = compose_config([f"experiments={experiment}"], tiny=False)
    assert cfg.study, f"experiment {experiment} sets no study name"


def test_every_yaml_knob_is_commented() -> None:
    """Each key line of every config carries a one-line comment (the docs of the knob)."""
    bare = []
    for path in [*CONF.rglob("*.yaml"), *experiments_dir().rglob("*.yaml")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "-")) or stripped == "{}":
                continue
            key, sep, value = stripped.partition(":")
            nested_block = sep and not value.strip()  # "source:" opens a block whose children are commented
            if "#" not in line and not nested_block and key not in ("_target_", "defaults"):
                bare.append(f"{path.relative_to(CONF.parent)}:{number}: {stripped}")
    assert not bare, "uncommented config keys:\n" + "\n".join(bare)


def test_precision_defaults_to_bf16_on_bf16_hardware() -> None:
    from peftbench.config import auto_precision, cpu_has_bf16

    cfg = compose_config([], tiny=False)
    assert OmegaConf.select(cfg, "trainer.precision") == auto_precision()
    if cpu_has_bf16():
        assert auto_precision() in ("bf16-mixed",)


def test_method_lr_wins_over_optimizer_default_unless_overridden() -> None:
    cfg = compose_config(["method=lora"])
    assert cfg.optimizer.lr == cfg.method.lr
    cfg = compose_config(["method=lora", "optimizer.lr=0.123"])
    assert cfg.optimizer.lr == 0.123


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("task.split_seed=-1", "task.split_seed=-1"),
        ("task.batch_size=0", "task.batch_size=0"),
        ("task.monitor=test/accuracy", "task.monitor=test/accuracy"),
        ("+task.colour=blue", "task.colour: unknown key"),
        ("task.headline=bleu", "task.headline=bleu"),
        ("task.source.kind=ftp", "task.source.kind='ftp'"),
    ],
)
def test_bad_task_values_fail_with_one_line(override: str, fragment: str) -> None:
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as error:
        TaskConfig.from_cfg(cfg.task)
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_unknown_group_choice_is_hydras_error() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="nosuchmethod"):
        compose_config(["method=nosuchmethod"])


def test_yaml_groups_mirror_the_code() -> None:
    expected = {
        "model",
        "method",
        "task",
        "optimizer",
        "scheduler",
        "regularizer",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "debug",
        "hydra",
    }
    assert expected <= set(YAML_GROUPS)
