"""Pareto plots of a leaderboard: score against what it cost (trainable %, peak memory, throughput).

One figure per cost axis and per (task, model, budget), PNG for reports and SVG for papers.
Points carry error bars (sample std over seeds); the Pareto front (no other method is better on
both axes) is drawn as a line through highlighted points.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402

# (file stem, row field, axis label, higher x is better)
AXES = (
    ("trainable_pct", "trainable_pct", "trainable parameters (%)", False),
    ("peak_mem", "peak_mem_mb", "peak memory (MiB)", False),
    ("throughput", "samples_per_s", "training throughput (samples/s)", True),
)


def pareto_front(points: Sequence[tuple[float, float]], higher_x_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (y: higher is better)."""
    order = sorted(
        range(len(points)), key=lambda i: (-points[i][0] if higher_x_better else points[i][0], -points[i][1])
    )
    front, best_y = [], float("-inf")
    for index in order:
        if points[index][1] > best_y:
            front.append(index)
            best_y = points[index][1]
    return front


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def pareto_plots(rows: Sequence, out_dir: Path, prefix: str | None = None) -> list[Path]:
    """Write the three Pareto plots of one (task, model, budget) section; returns the files written."""
    if not rows:
        return []
    first = rows[0]
    prefix = prefix or _slug(f"{first.task}-{first.model}-{first.budget}")
    written = []
    for stem, key, label, higher_better in AXES:
        data = [(row, row.numbers()) for row in rows]
        data = [(row, n) for row, n in data if n[key] is not None and n["mean"] is not None and n[key] > 0]
        if not data:
            continue
        xs = [n[key] for _, n in data]
        ys = [n["mean"] for _, n in data]
        errors = [n["std"] or 0.0 for _, n in data]
        front = pareto_front(list(zip(xs, ys, strict=True)), higher_better)
        figure, axis = plt.subplots(figsize=(5.5, 4))
        axis.errorbar(xs, ys, yerr=errors, fmt="o", color="tab:gray", ecolor="tab:gray", capsize=3, zorder=2)
        on_front = sorted(front, key=lambda i: xs[i])
        axis.plot(
            [xs[i] for i in on_front], [ys[i] for i in on_front], "-o", color="tab:red",
            label="Pareto front", zorder=3,
        )  # fmt: skip
        for (row, _), x, y in zip(data, xs, ys, strict=True):
            name = row.method if row.variant == "default" else f"{row.method} ({row.variant})"
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if max(xs) / min(xs) > 10:  # spans orders of magnitude: log scale shows them all
            axis.set_xscale("log")
        axis.set_xlabel(label + (" → better" if higher_better else " ← better"))
        axis.set_ylabel(f"test {first.metric} (mean ± std over seeds)")
        axis.set_title(f"{first.task} · {first.model} · {first.budget}", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        for suffix in (".png", ".svg"):
            path = out_dir / f"pareto_{prefix}_{stem}{suffix}"
            figure.savefig(path, dpi=150)
            written.append(path)
        plt.close(figure)
    return written
