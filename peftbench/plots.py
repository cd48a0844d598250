"""Pareto plots of a leaderboard: score against what it cost (trainable %, peak memory, throughput).

One figure per cost axis and per (task, model, budget), PNG for reports and SVG for papers. Each point is a
leaderboard row with its 95 % interval as an (asymmetric) error bar, labelled with the row label and its
bootstrap probability of being on the Pareto front (``Row.pareto``, from ``stats.pareto_probability``). The
front of the point estimates (no other row better on both axes) is drawn as a red line. Rows that are not
ranked (at or below the trivial baseline) are grey crosses without a probability. The memory axis names its
source (CPU RSS or CUDA allocated) and is left out when the rows' sources differ. Labels are moved apart by
adjustText (a fixed number of iterations, so regenerated files stay byte-identical) and kept inside the axes;
a label moved off its point is joined to it by a thin grey line.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from adjustText import adjust_text  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from peftbench import stats  # noqa: E402
from peftbench.search import lookup  # noqa: E402

# SVG element ids come from a hash salted with a random value by default: a fixed salt keeps regenerated
# files byte-identical (and the date is left out of the metadata below).
matplotlib.rcParams["svg.hashsalt"] = "peftbench"

# (file stem, axis label, higher x is better)
AXES = (
    ("trainable_pct", "trainable parameters (%)", False),
    ("peak_mem", "peak memory (MiB)", False),
    ("throughput", "training throughput (samples/s)", True),
)
DPI = 150  # of the PNGs (the SVGs are vectors)
# adjustText moves labels for this many iterations (or until none overlaps). A count, not its default of
# one second of wall time: a time limit stops at a load-dependent step and the files would differ per run.
LABEL_ITERATIONS = 500
MEM_SOURCES = {"cpu_rss": "CPU RSS", "cuda_allocated": "CUDA allocated", "cuda_reserved": "CUDA reserved"}


def save_figure(figure: Any, stem: Path) -> list[Path]:
    """``stem``.png and .svg, byte-identical on a re-run (no date or software stamp), then the figure closed."""
    written = []
    for suffix in (".png", ".svg"):
        path = stem.with_name(stem.name + suffix)
        figure.savefig(path, dpi=DPI, metadata={"Date": None} if suffix == ".svg" else {"Software": None})
        written.append(path)
    plt.close(figure)
    return written


def pareto_front(points: Sequence[tuple[float, float]], higher_x_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (y: higher is better)."""
    on_front = stats.pareto_front(
        [y for _, y in points], [x for x, _ in points], "accuracy", not higher_x_better
    )
    return [i for i, on in enumerate(on_front) if on]


def axis_values(rows: Sequence[Any], stem: str) -> tuple[list[float | None], str]:
    """Each row's cost on one axis (None: not plotted) and the axis label.

    Memory is the increment over the loaded model when every row recorded it (schema 3), else the absolute
    peak; either way from one source, named in the label. Rows of different sources give no memory axis.
    """
    if stem == "trainable_pct":
        values = [row.mean_of("trainable_ratio_pct") for row in rows]
        return [v if v is not None and v > 0 else None for v in values], "trainable parameters (%)"
    if stem == "throughput":
        values = [row.mean_of("train_samples_per_s") for row in rows]
        return [v if v is not None and v > 0 else None for v in values], "training throughput (samples/s)"
    if stem != "peak_mem":
        raise ValueError(f"unknown axis {stem!r}")
    memories = [row.memory() for row in rows]
    kinds = {m["kind"] for m in memories}
    if len(kinds) != 1 or "mixed" in kinds:
        return [None] * len(rows), "peak memory (sources differ: not plotted)"
    source = MEM_SOURCES.get(next(iter(kinds)), next(iter(kinds)))
    increments = [m["increment"] for m in memories]
    if all(v is not None and v > 0 for v in increments):
        return increments, f"peak memory over the loaded model (MiB, {source})"
    peaks = [m["peak"] for m in memories]
    return [v if v is not None and v > 0 else None for v in peaks], f"peak memory (MiB, {source})"


def place_labels(
    axis: Any, labels: Sequence[Any], points: Sequence[tuple[float, float]], legend: Any | None = None
) -> None:
    """Move point labels apart so that none covers another, a marker or the legend (adjustText), and join a
    moved label to its point with a thin line. Call it after the layout is final: it works in pixels.

    Deterministic: a fixed iteration count, and adjustText's own jitter of coinciding labels is seeded."""
    if not labels:
        return
    adjust_text(
        list(labels),
        x=[x for x, _ in points],
        y=[y for _, y in points],
        objects=[legend] if legend is not None else None,
        ax=axis,
        iter_lim=LABEL_ITERATIONS,
        time_lim=None,
        expand=(1.1, 1.3),  # keep a margin around each label, so neighbours stay readable
        ensure_inside_axes=True,
        expand_axes=True,  # widen the limits first so the labels of the outermost points fit inside
        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _front_method(rows: Sequence[Any]) -> str:
    ranked = [r for r in rows if r.ranked]
    if ranked and all(not r.seed_only for r in ranked):
        return "P(on front): bootstrap over seeds x test examples"
    return "P(on front): bootstrap over seeds only (no per-example predictions)"


def pareto_plots(rows: Sequence[Any], out_dir: Path, prefix: str | None = None) -> list[Path]:
    """Write the three Pareto plots of one (task, model, budget) section; returns the files written."""
    if not rows:
        return []
    first = rows[0]
    prefix = prefix or _slug(f"{first.task}-{first.model}-{first.budget}")
    written = []
    for stem, _, higher_better in AXES:
        values, label = axis_values(rows, stem)
        data = [
            (row, x)
            for row, x in zip(rows, values, strict=True)
            if x is not None and row.interval is not None
        ]
        if not data:
            continue
        # Laid out at the PNG's resolution: the label placement below is computed in its pixels.
        figure, axis = plt.subplots(figsize=(6.5, 4.5), dpi=DPI)
        ranked = [(row, x) for row, x in data if row.ranked]
        others = [(row, x) for row, x in data if not row.ranked]
        for group, style in (
            (ranked, {"fmt": "o", "color": "tab:gray"}),
            (others, {"fmt": "x", "color": "0.7"}),
        ):
            if not group:
                continue
            xs = [x for _, x in group]
            ys = [row.interval.estimate for row, _ in group]
            low = [
                row.interval.estimate
                - (row.interval.low if row.interval.low is not None else row.interval.estimate)
                for row, _ in group
            ]
            high = [
                (row.interval.high if row.interval.high is not None else row.interval.estimate)
                - row.interval.estimate
                for row, _ in group
            ]
            axis.errorbar(xs, ys, yerr=[low, high], ecolor=style["color"], capsize=3, zorder=2, **style)
        if ranked:
            front = pareto_front([(x, row.interval.estimate) for row, x in ranked], higher_better)
            on_front = sorted(front, key=lambda i: ranked[i][1])
            axis.plot(
                [ranked[i][1] for i in on_front], [ranked[i][0].interval.estimate for i in on_front], "-o",
                color="tab:red", label="Pareto front (point estimates)", zorder=3,
            )  # fmt: skip
        labels = []
        for row, x in data:
            probability = row.pareto.get(stem)
            text = row.label if probability is None else f"{row.label} ({probability:.2f})"
            labels.append(axis.text(x, row.interval.estimate, text, fontsize=7, zorder=4))
        xs = [x for _, x in data]
        if max(xs) / min(xs) > 10:  # spans orders of magnitude: log scale shows them all
            axis.set_xscale("log")
        axis.margins(x=0.1, y=0.08)  # room beside the outermost points for their labels
        axis.set_xlabel(label + (" → better" if higher_better else " ← better"))
        interval_kind = "seeds only" if any(r.seed_only for r, _ in data) else "seeds x test examples"
        axis.set_ylabel(f"test {first.metric} (mean, 95 % interval over {interval_kind})", fontsize=8)
        axis.set_title(
            f"{first.task} · {first.model} · {first.budget}\n(number) = {_front_method(rows)}", fontsize=8
        )
        axis.grid(alpha=0.3)
        legend = axis.legend(fontsize=7, loc="lower right") if ranked else None
        figure.tight_layout()
        place_labels(axis, labels, [(x, row.interval.estimate) for row, x in data], legend)
        written += save_figure(figure, out_dir / f"pareto_{prefix}_{stem}")
    return written


# The memory breakdown's parts (peftbench/metrics/breakdown.py), bottom to top, and their colours.
MEMORY_PARTS = (
    ("runtime", "runtime (libraries, data)", "0.8"),
    ("frozen_weights", "frozen weights", "tab:blue"),
    ("trainable_weights", "trainable weights", "tab:green"),
    ("gradients", "gradients", "tab:olive"),
    ("optimizer_state", "optimizer state", "tab:orange"),
    ("activations_saved", "activations saved for backward", "tab:red"),
    ("workspace", "workspace (peak minus the rest)", "tab:purple"),
)


def memory_plot(rows: Sequence[Any], out_dir: Path, prefix: str | None = None) -> list[Path]:
    """A stacked bar per row: its peak memory split into the breakdown's parts (means over seeds).

    Only rows whose every run recorded the breakdown, from one memory source, are drawn (older result files
    have none: no plot). A negative workspace (parts that were never all alive at once) is drawn as zero and
    the bar's label says so, so a bar's height is the measured peak whenever the workspace is not negative.
    """
    drawn = [
        row
        for row in rows
        if all(len(row._values(f"mem_{part}_mb")) == len(row.runs) for part, _, _ in MEMORY_PARTS)
    ]
    kinds = {row.memory()["kind"] for row in drawn}
    if not drawn or len(kinds) != 1 or "mixed" in kinds:
        return []
    first = rows[0]
    prefix = prefix or _slug(f"{first.task}-{first.model}-{first.budget}")
    source = MEM_SOURCES.get(next(iter(kinds)), next(iter(kinds)))
    figure, axis = plt.subplots(figsize=(9.5, 0.45 * len(drawn) + 1.9))
    labels = []
    for index, row in enumerate(drawn):
        left = 0.0
        negative = False
        for part, name, colour in MEMORY_PARTS:
            value = row.mean_of(f"mem_{part}_mb") or 0.0
            if value < 0:
                negative, value = True, 0.0
            axis.barh(index, value, left=left, color=colour, label=name if index == 0 else None)
            left += value
        labels.append(row.label + (" (workspace < 0)" if negative else ""))
    axis.set_yticks(range(len(drawn)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel(f"peak memory in training (MiB, {source}); parts: peftbench/metrics/breakdown.py")
    axis.set_title(f"{first.task} · {first.model} · {first.budget}: where the peak goes", fontsize=8)
    axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out_dir / f"memory_{prefix}")


# --- learning-rate sensitivity of grid searches ---------------------------------------------------------------

# Families of conf/method/ (the order of the panels and their colours). A sensitivity figure of ~40 methods is
# small multiples, one panel per method, because one axis of 40 curves is unreadable: the curves of one family
# lie on top of each other (same shape, lrs a factor of 2 apart) and no legend or label can name 40 lines.
# Panels in family order, coloured by family, keep related methods side by side; a method missing here is
# drawn in "other" (tests/test_leaderboard_tuned.py checks every method has a family).
FAMILIES = {
    "full and selective": ("full", "head_only", "selective", "bitfit", "ln_tuning", "sparse", "shira",
                           "trainable_tokens"),
    "low-rank (LoRA and variants)": ("lora", "rslora", "dora", "pissa", "olora", "corda", "eva", "loftq",
                                     "qlora", "adalora", "lorafa", "loraplus", "delora", "randlora", "vblora",
                                     "vera", "miss"),
    "Hadamard and Kronecker products": ("loha", "lokr"),
    "multiplicative (orthogonal, rotation, scaling)": ("oft", "boft", "hra", "road", "ia3"),
    "transform domain (Fourier, wavelet, circulant)": ("fourierft", "waveft", "c3a"),
    "bottleneck adapters": ("houlsby", "pfeiffer"),
    "soft prompts": ("prompt_tuning", "prefix_tuning", "p_tuning"),
}  # fmt: skip
METHOD_FAMILIES = {method: family for family, methods in FAMILIES.items() for method in methods}
FAMILY_ORDER = (*FAMILIES, "other")
FAMILY_COLOURS = dict(zip(FAMILY_ORDER, plt.get_cmap("tab10").colors, strict=False))
PANEL_COLUMNS = 6  # 40 methods: 7 rows of 6 panels, one page of a paper
LR_FACTOR = "optimizer.lr_factor"


def method_family(method: str) -> str:
    return METHOD_FAMILIES.get(method, "other")


def searched_x(trial: Any, keys: Sequence[str]) -> tuple[float | None, str]:
    """A trial's position on the sensitivity plot's x axis, and the axis's name: for a search over
    ``optimizer.lr_factor`` the learning rate it trained at (optimizer.lr x the factor, read from its config);
    for a search over one other numeric key, that key's value. None when the trial has no such number."""

    def number(dotted: str) -> float | None:
        node = lookup(trial.config or {}, dotted)
        return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None

    if list(keys) == [LR_FACTOR]:
        lr, factor = number("optimizer.lr"), number(LR_FACTOR)
        name = "effective lr (lr × lr_factor)"  # short: a panel's own label when panels search different keys
        return (lr * factor if lr is not None and factor is not None else None), name
    if len(keys) == 1:
        return number(keys[0]), keys[0]
    return None, " × ".join(keys)


def _default_x(search: Any) -> float | None:
    """The method's own lr (factor 1) for an lr_factor search: where its default row trained."""
    if list(search.keys) != [LR_FACTOR] or not search.trials:
        return None
    lr = (search.trials[0].config or {}).get("optimizer", {}).get("lr")
    return float(lr) if isinstance(lr, int | float) and not isinstance(lr, bool) else None


def sensitivity_plot(searches: Sequence[Any], out_dir: Path, prefix: str | None = None) -> list[Path]:
    """The validation score of every trial of each method's grid search against its learning rate
    (``sensitivity_<task>-<model>-<budget>.{png,svg}``); returns the files written.

    One panel per search (``leaderboard.SearchSummary``), in family order, sharing the y axis (so flat and
    peaked curves compare at a glance) and, when every panel searched the same quantity, the log x axis. Each
    panel: the curve of the finished ok trials, the chosen trial (best validation) as a star, the band within
    one point of the best shaded (its share of the trials is the ``robust`` column, also in the panel title),
    the method's own lr (factor 1) as a dotted line, and diverged trials as crosses on the bottom edge. The
    panel's title names it, so no label sits among the curves and none can cover another."""
    drawn = [(s, [(searched_x(t, s.keys)[0], score) for t, score in s.scored()]) for s in searches]
    drawn = [(s, sorted((x, y) for x, y in points if x is not None and x > 0)) for s, points in drawn]
    drawn = [(s, points) for s, points in drawn if points]
    if not drawn:
        return []
    drawn.sort(
        key=lambda item: (FAMILY_ORDER.index(method_family(item[0].method)), item[0].method, item[0].identity)
    )
    first = drawn[0][0]
    prefix = prefix or _slug("-".join(first.section))
    x_names = {searched_x(s.trials[0], s.keys)[1] for s, _ in drawn}
    monitors = {s.monitor for s, _ in drawn}
    columns = min(PANEL_COLUMNS, len(drawn))
    rows = -(-len(drawn) // columns)
    width = max(2.1 * columns + 0.7, 5.6)  # a narrow figure still has room for the legend
    legend_columns = 4 if width >= 9 else 2
    header_lines = -(-(len({method_family(s.method) for s, _ in drawn}) + 4) // legend_columns) + 2
    figure, axes = plt.subplots(
        rows, columns, figsize=(width, 1.7 * rows + 0.17 * header_lines + 0.8), dpi=DPI, squeeze=False,
        sharex=len(x_names) == 1, sharey=len(monitors) == 1, layout="constrained",
    )  # fmt: skip
    methods = [s.method for s, _ in drawn]
    for index, (search, points) in enumerate(drawn):
        axis = axes.flat[index]
        colour = FAMILY_COLOURS[method_family(search.method)]
        xs, ys = [x for x, _ in points], [y for _, y in points]
        if search.best_score is not None:
            gap = search.tolerance if search.mode == "max" else -search.tolerance
            low, high = sorted((search.best_score - gap, search.best_score))
            axis.axhspan(low, high, color=colour, alpha=0.25, lw=0)
        axis.plot(xs, ys, "-o", color=colour, ms=3, lw=1.2, gid="curve", zorder=3)
        if search.best is not None:
            best_x = searched_x(search.best, search.keys)[0]
            if best_x is not None and best_x > 0:
                axis.plot([best_x], [search.best_score], ls="none", marker="*", ms=10, color=colour, mec="black",
                          mew=0.6, gid="chosen", zorder=4)  # fmt: skip
        default = _default_x(search)
        if default is not None:
            axis.axvline(default, ls=":", color="0.35", lw=0.8, zorder=1)
        diverged = [searched_x(t, search.keys)[0] for t in search.finished if t.status != "ok"]
        diverged = [x for x in diverged if x is not None and x > 0]
        if diverged:
            axis.plot(diverged, [0.0] * len(diverged), ls="none", marker="x", color="tab:red", ms=5,
                      transform=axis.get_xaxis_transform(), clip_on=False, gid="diverged", zorder=4)  # fmt: skip
        axis.set_xscale("log")
        # Within less than a decade matplotlib labels the minor ticks too (3×10⁻², 4×10⁻², ...), full size and
        # on top of each other: only the decades are labelled.
        axis.xaxis.set_minor_formatter(NullFormatter())
        name = (
            search.method if methods.count(search.method) == 1 else f"{search.method} #{search.identity[:6]}"
        )
        robust = f"{search.within}/{len(search.finished)}" if search.best_score is not None else "–"
        axis.set_title(f"{name}\nrobust {robust}", fontsize=7, pad=3)
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3, which="both", lw=0.4)
        if len(x_names) > 1:
            axis.set_xlabel(searched_x(search.trials[0], search.keys)[1], fontsize=6)
    for axis in axes.flat[len(drawn) :]:  # empty cells of the last row; the panels above show their x ticks
        axis.remove()
    for index in range(max(0, len(drawn) - columns), len(drawn)):
        axes.flat[index].xaxis.set_tick_params(labelbottom=True)
    if len(x_names) == 1:
        figure.supxlabel(f"{next(iter(x_names))}, log scale", fontsize=8)
    figure.supylabel(f"validation score ({', '.join(sorted(monitors))})", fontsize=8)
    seeds = ", ".join(str(seed) for seed in sorted({s.seed for s, _ in drawn}))
    title = (
        f"{' · '.join(first.section)}: sensitivity to the learning rate (grid search at seed {seeds}, "
        "validation scores; test never used)"
    )
    families = list(dict.fromkeys(method_family(s.method) for s, _ in drawn))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tolerances = sorted({s.tolerance for s, _ in drawn})
    # Legend entries for what some panel shows: a factor-1 line only for lr_factor searches, crosses only when
    # a trial diverged.
    any_default = any(_default_x(s) is not None for s, _ in drawn)
    any_diverged = any(t.status != "ok" for s, _ in drawn for t in s.finished)
    handles = [
        *(Line2D([], [], color=FAMILY_COLOURS[f], marker="o", ms=3, lw=1.2, label=f) for f in families),
        Line2D([], [], ls="none", marker="*", ms=9, color="0.6", mec="black", mew=0.6,
               label="chosen: best validation score"),
        Patch(color="0.6", alpha=0.3, lw=0,
              label=f"within 1 point of the best ({'/'.join(f'{t:g}' for t in tolerances)})"),
        *([Line2D([], [], ls=":", color="0.35", lw=0.8, label="method's own lr (factor 1)")] if any_default else []),
        *([Line2D([], [], ls="none", marker="x", color="tab:red", ms=5, label="diverged")] if any_diverged else []),
    ]  # fmt: skip
    # The title is the legend's: one block above the panels, which the constrained layout keeps clear of them
    # (a suptitle beside an outside legend is laid out on top of it).
    legend = figure.legend(
        handles=handles, loc="outside upper center", ncol=legend_columns, fontsize=6.5, frameon=False,
        title=textwrap.fill(title, width=int(width * 15)), title_fontsize=7.5,
    )  # fmt: skip
    legend.get_title().set_multialignment("center")
    return save_figure(figure, out_dir / f"sensitivity_{prefix}")
