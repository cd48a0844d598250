"""``reported.yaml``: what a paper reports (or what a study expects), written down before running.

One file per reproduction experiment, beside its config in ``experiments/<paper>/``. It holds two
kinds of expectation:

- **rows** -- a reported figure for one (task, model, method, metric), with the paper's table, the
  paper's spread (its ``±``), and a tolerance declared before running (the verdict's equivalence margin is
  sqrt(tolerance² + spread²), see reproduction.compare); ``run: false`` keeps a paper row as reference only
  (e.g. a baseline this project does not implement);
- **claims** -- statements about measured values, for studies with no paper figure to match:
  ``lora >= bitfit``, ``|lora - full| <= 1.0``, ``lora >= 78`` (values in the file's reported
  units, i.e. after ``scale``).

Everything is checked when the file loads; a bad key or value is one line naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftbench.errors import ConfigError

AGGREGATIONS = ("median", "mean", "max", "single")
OPERATORS = (">=", "<=", ">", "<")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # arm labels: letters, digits, underscores
_NUMBER = r"-?\d+(?:\.\d+)?"
# `a OP b`, `a - b OP x`, `|a - b| OP x`; each side a method (arm) name or a number.
_CLAIM = re.compile(
    rf"^\s*(?:(?P<abs>\|)\s*)?(?P<left>{_NAME}|{_NUMBER})\s*(?:-\s*(?P<minus>{_NAME}))?\s*(?(abs)\|)\s*"
    rf"(?P<op>>=|<=|>|<)\s*(?P<right>{_NAME}|{_NUMBER})\s*$"
)


@dataclass
class ReportedRow:
    task: str
    method: str  # the arm label in results (results' `method` field)
    metric: str
    reported: float | None  # the paper's figure, in reported units
    model: str | None = None  # default: the file's model
    spread: float | None = None  # the paper's ± (what it means is the paper's: see `conventions`)
    tolerance: float | None = None  # default: the file's tolerance
    source: str | None = None  # table or figure, e.g. "Table 2"
    label: str | None = None  # how the paper names the row, e.g. "LoRA (0.3M)"
    run: bool = True  # false: reference only, never run here (verdict "not run")
    note: str | None = None


@dataclass
class Claim:
    text: str  # as written, e.g. "|lora - full| <= 1.0"
    task: str
    metric: str
    model: str | None = None
    note: str | None = None
    left: str = ""
    minus: str | None = None
    absolute: bool = False
    operator: str = ">="
    right: str = ""

    @property
    def methods(self) -> list[str]:
        return [n for n in (self.left, self.minus, self.right) if n is not None and not _is_number(n)]


@dataclass
class Reported:
    paper: str  # full citation
    path: Path
    model: str | None = None  # default model of every row and claim
    aggregation: str = "median"  # how the paper aggregates seeds (the verdict compares this figure)
    seeds: int | None = None  # seeds the paper aggregates over
    scale: float = 100.0  # reported = measured x scale (papers print percentages)
    tolerance: float = 1.0  # declared part of the equivalence margin (reported units); see compare.margin_of
    conventions: list[str] = field(default_factory=list)  # what a reader must know (validation-as-test, ...)
    rows: list[ReportedRow] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    def model_of(self, item: ReportedRow | Claim) -> str | None:
        return item.model or self.model


def _is_number(token: str | None) -> bool:
    return token is not None and re.fullmatch(_NUMBER, token) is not None


def parse_claim(text: str, where: str) -> dict[str, Any]:
    """The parts of one claim; a ConfigError naming it when it is not one of the accepted forms."""
    match = _CLAIM.match(text or "")
    if match is None:
        raise ConfigError(
            f"{where}={text!r}: a claim is `a OP b`, `a - b OP x` or `|a - b| OP x` with OP one of "
            f"{' '.join(OPERATORS)} (a, b: method names; x: a number)"
        )
    parts = match.groupdict()
    if parts["abs"] and not parts["minus"]:
        raise ConfigError(f"{where}={text!r}: |...| needs a difference, e.g. |lora - full| <= 1.0")
    if _is_number(parts["left"]):
        raise ConfigError(f"{where}={text!r}: the left side must name a method (write `lora <= 78`)")
    return {
        "left": parts["left"],
        "minus": parts["minus"],
        "absolute": bool(parts["abs"]),
        "operator": parts["op"],
        "right": parts["right"],
    }


def _known(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")


def _entries(
    data: dict[str, Any], section: str, where: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> list[tuple[str, dict[str, Any]]]:
    """The entries of ``rows`` or ``claims``, each checked for unknown and missing keys."""
    entries = []
    for index, entry in enumerate(data.get(section) or []):
        at = f"{where}.{section}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}={entry!r}: expected a mapping")
        _known(entry, allowed, at)
        for key in required:
            if not entry.get(key):
                raise ConfigError(f"{at}.{key}: missing")
        entries.append((at, entry))
    return entries


def load_reported(path: str | Path) -> Reported:
    """Read and check a reported.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reported file {path}: does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    where = path.name
    top = ("paper", "model", "aggregation", "seeds", "scale", "tolerance", "conventions", "rows", "claims")
    _known(data, top, where)
    if not data.get("paper"):
        raise ConfigError(f"{where}.paper: missing; name the paper (or the study) the expectations come from")
    aggregation = data.get("aggregation", "median")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"{where}.aggregation={aggregation!r}: allowed {', '.join(AGGREGATIONS)}")
    reported = Reported(
        paper=str(data["paper"]),
        path=path,
        model=data.get("model"),
        aggregation=aggregation,
        seeds=data.get("seeds"),
        scale=float(data.get("scale", 100.0)),
        tolerance=float(data.get("tolerance", 1.0)),
        conventions=[str(c) for c in data.get("conventions") or []],
    )
    row_keys = tuple(ReportedRow.__dataclass_fields__)
    for at, row in _entries(data, "rows", where, row_keys, ("task", "method", "metric")):
        if "reported" not in row:
            raise ConfigError(f"{at}.reported: missing (null when the paper gives none)")
        value = row["reported"]
        if value is not None and not isinstance(value, int | float):
            raise ConfigError(f"{at}.reported={value!r}: a number or null")
        reported.rows.append(ReportedRow(**row))
    claim_keys = ("claim", "task", "metric", "model", "note")
    for at, claim in _entries(data, "claims", where, claim_keys, ("claim", "task", "metric")):
        parts = parse_claim(str(claim["claim"]), f"{at}.claim")
        reported.claims.append(
            Claim(
                text=str(claim["claim"]),
                task=claim["task"],
                metric=claim["metric"],
                model=claim.get("model"),
                note=claim.get("note"),
                **parts,
            )
        )
    if not reported.rows and not reported.claims:
        raise ConfigError(f"{where}: no rows and no claims: nothing to compare against")
    return reported


def check_against_plan(
    reported: Reported, tasks: dict[str, list[str]], arm_tasks: dict[str, list[str]], model: str
) -> None:
    """Every row and claim that is to be run must name a task, method (arm) and metric the experiment runs.

    ``tasks`` maps each task the experiment runs to its metric names, ``arm_tasks`` each arm to the
    tasks it runs. All mismatches are listed at once, so a user fixes the file in one go.
    """
    problems: list[str] = []
    for index, row in enumerate(reported.rows):
        if not row.run:
            continue
        problems += _mismatches(f"rows[{index}]", row.task, [row.method], row.metric, tasks, arm_tasks)
        row_model = reported.model_of(row)
        if row_model is not None and row_model != model:
            problems.append(f"rows[{index}]: model {row_model!r}, but the experiment runs {model!r}")
    for index, claim in enumerate(reported.claims):
        problems += _mismatches(f"claims[{index}]", claim.task, claim.methods, claim.metric, tasks, arm_tasks)
    if problems:
        raise ConfigError(
            f"{reported.path}: names what the experiment does not run -- " + "; ".join(problems)
        )


def _mismatches(
    where: str,
    task: str,
    arms: list[str],
    metric: str,
    tasks: dict[str, list[str]],
    arm_tasks: dict[str, list[str]],
) -> list[str]:
    problems = []
    if task not in tasks:
        problems.append(f"{where}: task {task!r} not in the experiment's tasks {sorted(tasks)}")
    elif metric not in tasks[task]:
        problems.append(f"{where}: metric {metric!r} not among task {task}'s metrics {tasks[task]}")
    for arm in arms:
        if arm not in arm_tasks:
            problems.append(f"{where}: method {arm!r} not in the experiment's methods {sorted(arm_tasks)}")
        elif task in tasks and task not in arm_tasks[arm]:
            problems.append(f"{where}: method {arm!r} does not run task {task!r} (it runs {arm_tasks[arm]})")
    return problems
