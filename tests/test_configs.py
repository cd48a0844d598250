"""Every config file composes and validates (found by glob: a new YAML is tested without editing this file)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CONF, METHOD_NAMES, TASK_NAMES, compose_config
from omegaconf import OmegaConf

from peftbench.errors import ConfigError
from peftbench.methods.build import build_method
from peftbench.models.backbone import ModelConfig
from peftbench.resources import experiments_dir
from peftbench.tasks.config import TaskConfig

YAML_GROUPS = sorted(p.parent.name for p in CONF.glob("*/*.yaml"))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_yaml_composes_and_builds(name: str) -> None:
    cfg = compose_config([f"method={name}"])
    assert cfg.method.name == name, "a method's name must equal its file name (it is the results label)"
    method = build_method(cfg.method)
    assert method.name == name
    assert cfg.method.meta.get("paper"), f"method {name} names no paper"


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


def _study_experiments() -> list[str]:
    return sorted(
        str(p.relative_to(experiments_dir()).with_suffix(""))
        for p in experiments_dir().rglob("*.yaml")
        if p.name != "reported.yaml"
    )


@pytest.mark.parametrize("experiment", _study_experiments())
def test_experiment_composes(experiment: str) -> None:
    cfg = compose_config([f"experiments={experiment}"], tiny=False)
    assert cfg.study, f"experiment {experiment} sets no study name"


def test_every_yaml_knob_is_commented() -> None:
    """Every key of every config is documented, so a reader never meets an unexplained knob. A key line is
    documented when one of these holds:

    - it carries a comment on its line (what the knob does or why this value; not the key's name again);
    - it opens a block (``source:``): its children are checked instead;
    - it overrides a key that a base listed in the file's ``defaults:`` documents (conf/model/_base/*.yaml,
      conf/task/_base/glue.yaml, and the bases those list): the base documents the key once, and an
      override carries a comment only to add something;
    - it is a row of a documented table: a block with a comment whose children are all one-line flow
      mappings with the same keys (a reproduction's recipe: the block's comment gives the source, the
      row's keys name the columns);
    - it is ``_target_`` or ``defaults``.
    """
    bare = []
    for path in [*CONF.rglob("*.yaml"), *experiments_dir().rglob("*.yaml")]:
        inherited = set().union(*(_documented_paths(base) for base in _bases(path)))
        rows = _documented_table_rows(path)
        for line in _config_lines(path):
            documented = (
                line.commented
                or line.opens_block
                or (line.is_key and (line.path in inherited or line.number in rows))
                or line.path[-1:] in (("_target_",), ("defaults",))
            )
            if not documented:
                bare.append(f"{path.relative_to(CONF.parent)}:{line.number}: {line.text}")
    assert not bare, "uncommented config keys:\n" + "\n".join(bare)


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_precision_defaults_to_bf16_on_bf16_hardware(bf16: bool, expected: str, monkeypatch) -> None:
    """The composed default follows the CPU's native bf16 support (both branches, on any machine: the
    detection is stubbed, not the decision under test)."""
    import torch

    import peftbench.config as config_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: bf16)
    cfg = compose_config([], tiny=False)
    assert OmegaConf.select(cfg, "trainer.precision") == expected


def test_method_lr_wins_over_optimizer_default_unless_overridden() -> None:
    cfg = compose_config(["method=lora"])
    assert cfg.optimizer.lr == cfg.method.meta.lr
    cfg = compose_config(["method=lora", "optimizer.lr=0.123"])
    assert cfg.optimizer.lr == 0.123


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("task.split_seed=-1", "task.split_seed=-1"),
        ("task.batch_size=0", "task.batch_size=0"),
        ("task.monitor=test/accuracy", "task.monitor=test/accuracy"),
        ("+task.colour=blue", "task.colour='blue': unknown key"),
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


# --- Config inheritance: the comment rule above, and a model file overrides only what differs ---------------

MODEL_FILES = sorted((CONF / "model").rglob("*.yaml"))
_COMMENT = re.compile(r"\s#")  # a comment starts at a # after whitespace; a # inside a value is not one


@dataclass(frozen=True)
class ConfigLine:
    """One line of a YAML file that sets something: a key (``path`` is its dotted key path) or a flow
    value on its own line under a key (``is_key`` false; ``path`` is that key's)."""

    number: int
    path: tuple[str, ...]
    text: str
    is_key: bool
    commented: bool
    opens_block: bool  # "key:" with nothing after it: its children follow on the next lines
    flow_mapping: bool  # "key: {...}" on one line


def _config_lines(path: Path) -> list[ConfigLine]:
    """The lines of ``path`` that set something, with key paths from their indentation. Read as text
    because comments are not in the parsed data; list items name no key and are left out."""
    found: list[ConfigLine] = []
    parents: list[tuple[int, str]] = []  # (indent, key) of the open blocks around the current line
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or stripped == "{}":
            continue
        commented = bool(_COMMENT.search(line))
        if stripped.startswith(("{", "[")):  # a flow value below "key:"
            found.append(
                ConfigLine(number, tuple(k for _, k in parents), stripped, False, commented, False, False)
            )
            continue
        indent = len(line) - len(line.lstrip())
        while parents and parents[-1][0] >= indent:
            parents.pop()
        key, _, value = stripped.partition(":")
        value = _COMMENT.split(value, maxsplit=1)[0].strip()
        key_path = (*(k for _, k in parents), key.strip("'\""))
        found.append(
            ConfigLine(number, key_path, stripped, True, commented, not value, value.startswith("{"))
        )
        if not value:
            parents.append((indent, key_path[-1]))
    return found


def _bases(path: Path) -> list[Path]:
    """The config files ``path`` lists in ``defaults:`` as plain names (``_base/glue``, ``/model/_base/bert``):
    its bases, which it overrides. Group choices (``override /model: x``) are no bases."""
    defaults = OmegaConf.load(path).get("defaults") or []
    bases = []
    for entry in defaults:
        if isinstance(entry, str) and entry != "_self_":
            base = CONF / f"{entry[1:]}.yaml" if entry.startswith("/") else path.parent / f"{entry}.yaml"
            if base.is_file():  # else a Hydra plugin's config (hydra/sweeper: optuna), not one of ours
                bases.append(base)
    return bases


def _documented_paths(path: Path) -> set[tuple[str, ...]]:
    """Key paths that carry a comment in ``path`` or in the bases it inherits."""
    own = {line.path for line in _config_lines(path) if line.is_key and line.commented}
    return own.union(*(_documented_paths(base) for base in _bases(path)))


def _documented_table_rows(path: Path) -> set[int]:
    """Line numbers of the rows of documented tables in ``path`` (see test_every_yaml_knob_is_commented)."""
    lines = [line for line in _config_lines(path) if line.is_key]
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    rows: set[int] = set()
    for opener in lines:
        if not (opener.opens_block and opener.commented):
            continue
        children = [line for line in lines if line.path[:-1] == opener.path]
        node = _lookup(data, opener.path)
        tabular = (
            len(children) > 1
            and all(child.flow_mapping for child in children)
            and isinstance(node, dict)
            and len({tuple(row) if isinstance(row, dict) else None for row in node.values()}) == 1
        )
        if tabular:
            rows.update(child.number for child in children)
    return rows


_MISSING = object()


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _leaves(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, data


def _own_values(path: Path) -> dict[str, Any]:
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    own.pop("defaults", None)
    return own


def _inherited_values(path: Path) -> dict[str, Any]:
    """What the bases of ``path`` define, merged as Hydra merges them (in order, each base over its own bases)."""
    merged = OmegaConf.merge({}, *(_resolved_values(base) for base in _bases(path)))
    return OmegaConf.to_container(merged, resolve=False)


def _resolved_values(path: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.merge(_inherited_values(path), _own_values(path)), resolve=False)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_yaml_inherits_its_family_base(name: str) -> None:
    """Each model file lists a family base (conf/model/_base/) before ``_self_``, so the family's module
    names and defaults live in one place; merging the files as this module does gives Hydra's model
    config, so the repetition test below reasons about what runs."""
    path = CONF / "model" / f"{name}.yaml"
    defaults = list(OmegaConf.load(path).get("defaults") or [])
    assert any(base.parent.name == "_base" for base in _bases(path)), f"model {name} lists no _base/ family"
    assert defaults[-1] == "_self_", f"model {name}: _self_ must come last so the file overrides its base"
    composed = compose_config([f"model={name}"], tiny=False).model
    assert OmegaConf.to_container(composed, resolve=False) == _resolved_values(path)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: str(p.relative_to(CONF / "model")))
def test_model_yaml_repeats_no_base_value(path: Path) -> None:
    """A model (or family) file sets only what differs from its base: a default repeated with the base's
    value is a second copy that a change to the base would silently miss."""
    inherited = _inherited_values(path)
    repeated = [
        ".".join(key) for key, value in _leaves(_own_values(path)) if _lookup(inherited, key) == value
    ]
    assert not repeated, (
        f"{path.relative_to(CONF.parent)} repeats its base's value for: {', '.join(repeated)}"
    )


@pytest.mark.parametrize("experiment", _study_experiments())
def test_a_committed_study_composes_its_recorded_precision_on_any_cpu(experiment: str, monkeypatch) -> None:
    """A study whose runs are committed resumes by run id, and the id hashes trainer.precision. Left to ``auto``,
    a CPU without native bf16 composes 32-true where the committed runs recorded bf16-mixed (or the reverse), so
    every finished point looks unrun and the re-run trains another configuration beside the committed one."""
    import json

    import torch

    import peftbench.config as config_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    composed = {}
    for native in (True, False):
        monkeypatch.setattr(config_module, "cpu_has_bf16", lambda native=native: native)
        cfg = compose_config([f"experiments={experiment}"], tiny=False)
        composed[native] = OmegaConf.select(cfg, "trainer.precision")
    runs = Path(__file__).resolve().parents[1] / str(cfg.paths.results_dir)
    recorded = set()
    for path in runs.glob("*.json"):
        recorded.add(json.loads(path.read_text())["config"]["trainer"]["precision"])
    if not recorded:
        assert composed[True] != "auto", "composition resolves precision"
        return
    assert len(recorded) == 1, f"{runs} pools precisions {sorted(recorded)}"
    assert composed[True] == composed[False] == recorded.pop()
