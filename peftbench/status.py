"""How far a study has come: the points a sweep would run, and which of them already have a result.

``peftbench-results status experiments=compare/tuned/search [method=lora,ia3]`` takes the overrides a
``peftbench-train -m`` command would get, expands the sweep the way Hydra's basic sweeper does (the config's
``hydra.sweeper.params``, with the command line's own sweeps taking precedence), composes every point and
computes its run id, then looks the id up in the point's results folder: the same lookup a resumed sweep
makes before it skips a point. Nothing is trained or written.

Why by hand: Hydra builds the points only inside a multirun (its sweeper needs a launcher), and a long study
must be committed in parts with a README that says what is done; counting files would miss which points
are still to run and would count files of other configurations.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError
from peftbench.results import RunResult, compute_run_id, run_results

WAITING = (
    "waiting"  # a report point whose search has no choice yet (its ${peftbench.chosen:...} cannot resolve)
)
TO_RUN = "to run"


@dataclass
class Point:
    """One job of the sweep: its swept values, run id (None while it waits for a search) and state: ``ok``, a
    failure status of its newest file (``failed``, ``killed``, ...), ``to run`` or ``waiting``."""

    overrides: list[str]
    run_id: str | None
    state: str
    result: RunResult | None = None
    why: str = ""


def sweep_points(overrides: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(the swept keys, one full override list per job), as ``peftbench-train -m OVERRIDES`` runs them with
    Hydra's basic sweeper: the config's ``hydra.sweeper.params`` then the command line, one entry per key (a
    later entry replaces an earlier one in its place), and the jobs are the cartesian product, in that order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from peftbench.resources import compose

    parser = OverridesParser.create()
    plain = [o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    params = OmegaConf.select(compose(plain, return_hydra_config=True), "hydra.sweeper.params")
    entries = [f"{key}={value}" for key, value in (params or {}).items()]
    final: dict[str, list[str]] = {}
    for override in parser.parse_overrides([*entries, *overrides]):
        key = override.get_key_element()
        if override.is_sweep_override():
            final[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            final[key] = [f"{key}={override.get_value_element_as_str()}"]
    swept = [key for key, values in final.items() if len(values) > 1]
    return swept, [list(job) for job in itertools.product(*final.values())]


def _newest_file(results_dir: Path, run_id: str) -> RunResult | None:
    """The point's result: a finished one (any label: a trial, a default run, a report stage's tuned run) or,
    when none finished, the newest attempt, whose status says why."""
    found = run_results(results_dir, run_id)
    pool = [r for r in found if r.status == "ok"] or found
    return max(pool, key=lambda r: r.ended_at or "") if pool else None


def point_state(cfg: DictConfig, overrides: list[str]) -> Point:
    """Where one composed point stands (read only: unlike a resumed sweep, it never writes a relabelled copy).
    ``overrides`` are the point's swept values, what it is shown by."""
    from peftbench.search import resolve_choices

    try:
        resolve_choices(cfg)
    except ConfigError as error:
        return Point(overrides, None, WAITING, why=str(error))
    run_id = compute_run_id(cfg)
    result = _newest_file(Path(str(cfg.paths.results_dir)), run_id)
    if result is None:
        return Point(overrides, run_id, TO_RUN)
    return Point(overrides, run_id, result.status, result)


def study_status(
    overrides: Sequence[str], progress: Callable[[int, int], None] | None = None
) -> tuple[list[str], list[Point]]:
    """The swept keys, and every point of the sweep with its state (``progress(i, n)`` after each: composing a
    point takes ~0.1-0.3 s)."""
    from peftbench.resources import compose

    swept, jobs = sweep_points(overrides)
    out = []
    for number, job in enumerate(jobs, 1):
        shown = [o for o in job if o.split("=", 1)[0] in swept]
        out.append(point_state(compose(job), shown))
        if progress is not None:
            progress(number, len(jobs))
    return swept, out


def _group_key(point: Point, key: str | None) -> str:
    values = dict(o.split("=", 1) for o in point.overrides)
    return values.get(key, "(all)") if key else "(all)"


def status_table(points: Sequence[Point], by: str | None = None) -> str:
    """Counts per value of ``by`` (default: ``method`` when it is swept, else the first swept key), then the
    totals and, from the finished points' wall times, what the rest would take on one stream."""
    swept = [o.split("=", 1)[0] for o in points[0].overrides] if points else []
    key = by or ("method" if "method" in swept else (swept[0] if swept else None))
    groups: dict[str, Counter] = {}
    for point in points:
        groups.setdefault(_group_key(point, key), Counter())[point.state] += 1
    states = ["ok", TO_RUN, WAITING] + sorted({p.state for p in points} - {"ok", TO_RUN, WAITING})
    states = [s for s in states if any(c[s] for c in groups.values())]
    lines = [
        f"| {key or 'points'} | " + " | ".join(states) + " | done |",
        "|---|" + "---|" * (len(states) + 1),
    ]
    for name, counts in groups.items():
        total = sum(counts.values())
        cells = " | ".join(str(counts[s]) for s in states)
        lines.append(f"| {name} | {cells} | {counts['ok']}/{total} |")
    totals = Counter(p.state for p in points)
    cells = " | ".join(str(totals[s]) for s in states)
    lines.append(f"| **all** | {cells} | **{totals['ok']}/{len(points)}** |")
    walls = [_wall(p.result) for p in points if p.state == "ok" and p.result is not None]
    walls = [w for w in walls if w is not None]
    left = (
        totals[TO_RUN]
        + totals[WAITING]
        + sum(n for s, n in totals.items() if s not in ("ok", TO_RUN, WAITING))
    )
    if walls and left:
        median = statistics.median(walls)
        lines.append(
            f"\n{left} point(s) left; at the finished points' median wall time ({median:.0f} s, one job at a "
            f"time) about {left * median / 3600:.1f} h of one stream (less with parallel jobs, more for slower "
            "methods)."
        )
    return "\n".join(lines)


def _wall(result: RunResult) -> float | None:
    value: Any = (result.budget or {}).get("wall_time_s")
    return float(value) if isinstance(value, int | float) else None
