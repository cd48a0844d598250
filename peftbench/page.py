"""``leaderboard.html``: the leaderboard as one self-contained page (no server, no network).

The page holds the rows as a table a reader can sort (click a header) and filter (task, model, budget,
method, variant, free text), and a Pareto plot of any two of the rows' figures picked from two dropdowns,
with the rows' 95 % intervals as error bars. Hovering a point shows the row's config diff (the keys its
label names: what differs from the method's shipped defaults or between rows of one method) and the result
files it pools, as paths relative to the page; a row whose method has a grid search also shows the search's
chosen value, trials and robustness (columns of the table and a line of the hover). Every figure is one
``Row.numbers()`` already holds and every cell is ``display_rows`` text, so the page agrees with
leaderboard.md/csv/tex; nothing is recomputed here.

Plotly draws the plot: its JavaScript bundle (``plotly.offline.get_plotlyjs``, about 4.8 MB) is inlined, so
the page opens from ``file://`` without a network. The table's sorting and filtering and the choice of axes
are a few lines of JavaScript (``page_assets/leaderboard.js``): no table library ships as a Python package.

Regenerating the page from the same files gives the same bytes: fixed element ids, rows in leaderboard
order, JSON with a fixed key order, no dates.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from peftbench import stats
from peftbench.leaderboard import (
    ALPHA,
    Leaderboard,
    Row,
    _default_differences,
    _value_text,
    display_rows,
    method_defaults,
    search_cells,
    section_footnotes,
    sections,
)
from peftbench.results import RunResult

PAGE_NAME = "leaderboard.html"


@dataclass(frozen=True)
class Axis:
    """One figure a plot axis can show: a ``Row.numbers()`` key, with its interval keys when it has one."""

    key: str
    title: str  # the axis title and dropdown entry
    short: str  # the name in the hover text
    # "higher", "lower", or "metric": the row's headline metric's direction (stats.higher_is_better).
    better: str
    low: str | None = None  # numbers() key of the interval's low end (error bars)
    high: str | None = None


# The order of the dropdowns. Costs are means over a row's seeds (no interval, so no error bar). A figure a
# row's files lack (energy without the energy callback) is null: the row is left out of that plot.
AXES = (
    Axis("mean", "test score (headline metric, mean, 95 % interval)", "score", "metric", "interval_low", "interval_high"),
    Axis("diff", "difference to the reference row (95 % interval)", "diff", "metric", "diff_low", "diff_high"),
    Axis("trainable_pct", "trainable parameters (%)", "trainable %", "lower"),
    Axis("trainable_params", "trainable parameters", "trainable", "lower"),
    Axis("peak_mem_mb", "peak memory (MiB)", "peak MiB", "lower"),
    Axis("peak_mem_increment_mb", "peak memory over the loaded model (MiB)", "+MiB over load", "lower"),
    Axis("samples_per_s", "training throughput (samples/s)", "samples/s", "higher"),
    Axis("train_time_s", "training time (s)", "time s", "lower"),
    Axis("train_energy_kwh", "training energy (kWh, estimate)", "energy kWh", "lower"),
    Axis("train_co2_kg", "training CO2 (kg, estimate)", "CO2 kg", "lower"),
    Axis("train_flops_est", "training FLOPs (estimate)", "FLOPs", "lower"),
    Axis("tokens", "training tokens", "tokens", "lower"),
)  # fmt: skip
DEFAULT_X, DEFAULT_Y = "trainable_pct", "mean"
# Table columns the filter dropdowns offer, and the Row attribute each one matches.
FILTERS = ("task", "model", "budget", "method", "variant")
# display_rows columns that sort by a number (the numbers() key) rather than by their text; the score and
# memory headers vary (they name the metric and the memory source), so they are matched by prefix.
SORT_KEYS = {
    "diff vs ref": "diff",
    "p (Holm)": "p_holm",
    "n": "n",
    "trainable %": "trainable_pct",
    "trainable": "trainable_params",
    "samples/s": "samples_per_s",
    "peak MiB": "peak_mem_mb",
    "+MiB over load": "peak_mem_increment_mb",
    "time s": "train_time_s",
    "energy kWh": "train_energy_kwh",
    "CO₂ g": "train_co2_kg",
    # A grid search's columns (only in tables with one): finished trials, and the robust share within/finished.
    "trials": "search_finished",
    "robust": "search_robust",
}
PARETO_KEYS = {"trainable %": "pareto_p_trainable_pct", "peak memory": "pareto_p_peak_mem",
               "throughput": "pareto_p_throughput"}  # fmt: skip


def _sort_key(column: str) -> str | None:
    if column.endswith("[95% CI]") and not column.startswith("diff"):
        return "mean"
    for prefix in sorted(SORT_KEYS, key=len, reverse=True):  # "trainable %" before "trainable"
        if column == prefix or column.startswith(prefix + " "):
            return SORT_KEYS[prefix]
    return None


def _finite(value: Any) -> Any:
    """JSON has no NaN: a missing figure is null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _portable(path: Path, out_dir: Path, source: Path) -> str:
    """The file as the page links it: relative to the page's folder (the page and its runs move together)."""
    try:
        relative = os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows): relative to the results folder instead
        relative = os.path.relpath(path.resolve(), source.resolve())
    return PurePath(relative).as_posix()


def result_paths(
    files: Sequence[tuple[Path, RunResult]], out_dir: Path, source: Path
) -> dict[tuple[str, str, str], str]:
    """Each result's file, keyed by run id, variant and end time (identical copies of one run: the first path
    in sorted order, so the page does not depend on the order the folder was read in)."""
    found: dict[tuple[str, str, str], str] = {}
    for path, result in sorted(files, key=lambda item: str(item[0])):
        found.setdefault(
            (result.run_id, result.variant, result.ended_at or ""), _portable(path, out_dir, source)
        )
    return found


def config_diff(row: Row) -> list[str]:
    """The keys the row's label names (``Row.differs``), each ``key=value``; a key that is at the method's
    shipped default reads ``(default)``: it is named because another row of the method changed it."""
    changed = _default_differences(row.runs[0])
    defaults = method_defaults(row.method)
    has_lr = "method.meta.lr" in defaults or "method.lr" in defaults
    out = []
    for key, value in row.differs.items():
        at_default = key not in changed and (key in defaults or (key == "optimizer.lr" and has_lr))
        out.append(f"{key}={_value_text(value)}" + (" (default)" if at_default else ""))
    return out


def _search_line(row: Row) -> str:
    """The hover text's line on the method's grid search (the table's chosen, trials and robust columns)."""
    cells, search = search_cells(row), row.search
    if search is None:
        return ""
    return (
        f"search (validation {search.monitor}): chosen {cells['chosen']}, {cells['trials']} trials, "
        f"robust {cells['robust']} within 1 point ({search.tolerance:g}) of the best"
    )


def _row_record(row: Row, files: dict[tuple[str, str, str], str]) -> dict[str, Any]:
    """What the plot needs of one row: its figures, its section, and the static part of its hover text."""
    numbers = row.numbers()
    keys = {a.key for a in AXES} | {k for a in AXES for k in (a.low, a.high) if k}
    runs = sorted(row.runs, key=lambda r: r.seed)
    paths = [
        files.get((r.run_id, r.variant, r.ended_at or ""), f"(run {r.run_id}: file not found)") for r in runs
    ]
    diff = config_diff(row)
    pareto = [f"{name} {numbers[key]:.2f}" for name, key in PARETO_KEYS.items() if numbers[key] is not None]
    lines = [
        f"<b>{html.escape(row.label)}</b>",
        html.escape(f"{row.task} · {row.model} · {row.budget}"),
        html.escape(
            f"group: {row.group or '–'} · n = {row.n} · {numbers['interval_method'] or 'no interval'}"
        ),
        "config diff: " + (html.escape(", ".join(diff)) if diff else "the method's defaults"),
        *(["P(on front): " + html.escape(", ".join(pareto))] if pareto else []),
        *([html.escape(_search_line(row))] if row.search is not None else []),
        *(["flags: " + html.escape(numbers["flags"])] if numbers["flags"] else []),
        "files:",
        *(html.escape(p) for p in paths),
    ]
    return {
        "section": f"{row.task} · {row.model} · {row.budget}",
        **{name: getattr(row, name) for name in FILTERS},
        "label": row.label,
        "metric": row.metric,
        "ranked": row.ranked,
        "higher_is_better": stats.higher_is_better(row.metric),
        "peak_mem_kind": numbers["peak_mem_kind"],
        "values": {k: _finite(numbers.get(k)) for k in sorted(keys)},  # null: a figure this row lacks
        "hover": "<br>".join(lines),
        "files": paths,
    }


def _cell(text: str, sort: Any = None, numeric: bool = False) -> str:
    attribute = ""
    if numeric:
        sort = _finite(sort)
        attribute = f' data-sort="{"" if sort is None else repr(float(sort))}"'
    return f"<td{attribute}>{text}</td>"


def _table(rows: Sequence[Row], records: Sequence[dict[str, Any]], median: bool) -> str:
    """The rows as display_rows writes them (one table across sections), plus method, variant, config diff
    and file links; numeric columns carry their raw figure for sorting."""
    cells_list = display_rows(rows, median, context=True)
    columns = list(dict.fromkeys(c for cells in cells_list for c in cells))
    columns[3:3] = ["method", "variant"]  # after task, model, budget
    numeric = {c: _sort_key(c) for c in columns}
    head = "".join(
        f'<th data-type="{"number" if numeric.get(c) else "text"}" scope="col">{html.escape(c)}</th>'
        for c in [*columns, "config diff", "result files"]
    )
    body = []
    for index, (row, cells, record) in enumerate(zip(rows, cells_list, records, strict=True)):
        numbers = row.numbers()
        cells = {**cells, "method": row.method, "variant": row.variant}
        tds = [
            _cell(html.escape(cells.get(c, "")), numbers.get(numeric[c]), True)
            if numeric[c]
            else _cell(html.escape(cells.get(c, "")))
            for c in columns
        ]
        diff = " ".join(f"<code>{html.escape(text)}</code>" for text in config_diff(row))
        tds.append(_cell(diff or "defaults"))
        links = [
            f'<a href="{html.escape(quote(path), quote=True)}" title="{html.escape(path, quote=True)}">'
            f"seed {run.seed}</a>"
            for run, path in zip(sorted(row.runs, key=lambda r: r.seed), record["files"], strict=True)
        ]
        tds.append(_cell(" ".join(links)))
        body.append(f'<tr data-row="{index}">{"".join(tds)}</tr>')
    return (
        f'<table id="rows">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def _select(
    name: str, label: str, options: Sequence[tuple[str, str]], chosen: str = "", filter_of: str = ""
) -> str:
    attribute = f' data-filter="{filter_of}"' if filter_of else ""
    items = "".join(
        f'<option value="{html.escape(v, quote=True)}"{" selected" if v == chosen else ""}>{html.escape(t)}</option>'
        for v, t in options
    )
    return f'<label>{html.escape(label)} <select id="{name}"{attribute}>{items}</select></label>'


def _notes(rows: Sequence[Row], board: Leaderboard | None, alpha: float) -> str:
    parts = []
    for key, members in sections(rows).items():
        notes = [*section_footnotes(members, alpha), *((board.notes.get(key, [])) if board else [])]
        items = "".join(f"<li>{html.escape(line)}</li>" for line in notes)
        parts.append(f"<h3>{html.escape(' · '.join(key))}</h3>\n<ul>{items}</ul>")
    return "\n".join(parts)


def _asset(name: str) -> str:
    return resources.files("peftbench").joinpath("page_assets", name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<' can close the element (escaped, still the same JSON)."""
    return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def render(
    rows: Sequence[Row],
    files: Sequence[tuple[Path, RunResult]],
    out_dir: Path,
    source: Path,
    n_results: int,
    median: bool = False,
    board: Leaderboard | None = None,
    alpha: float = ALPHA,
) -> str:
    """The page as text (``write_page`` writes it)."""
    from plotly.offline import get_plotlyjs

    paths = result_paths(files, out_dir, source)
    records = [_row_record(row, paths) for row in rows]
    n_sections = len(sections(rows))
    where = _portable(source, out_dir, source)
    axis_options = [(a.key, a.title) for a in AXES]
    filters = [
        _select(f"filter-{name}", name, [("", "all"), *((v, v) for v in sorted({getattr(r, name) for r in rows}))],
                filter_of=name)
        for name in FILTERS
    ]  # fmt: skip
    data = {
        "axes": [asdict(a) for a in AXES],
        "sections": list(dict.fromkeys(r["section"] for r in records)),
        "rows": records,
    }
    table = _table(rows, records, median) if rows else "<p>(no successful runs)</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>peftbench leaderboard</title>
<style>
{_asset("leaderboard.css")}</style>
</head>
<body>
<h1>peftbench leaderboard</h1>
<p>From <code>{html.escape(where)}</code> (relative to this page): {n_results} result file(s), {len(rows)} row(s)
in {n_sections} table(s) (task · model · budget; rows are compared only within one).
Static tables: <a href="leaderboard.md">Markdown</a> · <a href="leaderboard.csv">CSV</a> ·
<a href="leaderboard.tex">LaTeX</a>; how every figure is computed: <a href="report.md">report.md</a>.</p>
<section>
<h2>Pareto plot</h2>
<div class="controls">{_select("x-axis", "x", axis_options, DEFAULT_X)} {_select("y-axis", "y", axis_options, DEFAULT_Y)}
<label><input id="labels" type="checkbox"> label the points</label></div>
<div id="pareto"></div>
<p class="note">One point per row shown in the table below (the filters apply here too), at its mean over seeds.
Error bars: the row's 95 % interval (score and difference; costs are means without an interval). The line
joins each table's Pareto front of the point estimates: ranked rows that no other row of the table beats on
both axes. Crosses: rows not ranked (no score, or at or below the trivial baseline). Hover a point for its
config diff and result files; P(on front) there is the bootstrap probability of the static Pareto plots
(score against trainable %, peak memory and throughput).</p>
</section>
<section>
<h2>Rows</h2>
<div class="controls">{" ".join(filters)}
<label>text <input id="search" type="search" placeholder="any cell"></label> <span id="shown"></span></div>
<p class="note">Click a column header to sort (again: reverse); empty cells sort last.</p>
{table}
</section>
<section>
<h2>Notes</h2>
{_notes(rows, board, alpha)}
</section>
<script type="application/json" id="leaderboard-data">{_script_json(data)}</script>
<script>{get_plotlyjs()}</script>
<script>
{_asset("leaderboard.js")}</script>
</body>
</html>
"""


def write_page(
    rows: Sequence[Row],
    files: Sequence[tuple[Path, RunResult]],
    out_dir: Path,
    source: Path,
    n_results: int,
    median: bool = False,
    board: Leaderboard | None = None,
    alpha: float = ALPHA,
) -> Path:
    """Write ``out_dir/leaderboard.html``; ``files`` are the (path, result) pairs read, to link each run."""
    path = out_dir / PAGE_NAME
    path.write_text(render(rows, files, out_dir, source, n_results, median, board, alpha), encoding="utf-8")
    return path
