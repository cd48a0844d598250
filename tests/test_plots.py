"""Pareto plots: every point labelled, no two labels over each other, byte-identical when regenerated."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from conftest import run_result

from peftbench import leaderboard as lb
from peftbench import plots


def _dense_rows() -> list[lb.Row]:
    """12 configurations within 0.05 trainable-% points and 2 accuracy points, and three far away that stretch
    the axes (as in the committed study): the cluster's labels would pile up."""
    far = {12: (0.01, 0.66, 980.0, 250.0), 13: (100.0, 0.80, 2200.0, 60.0), 14: (0.5, 0.56, 1470.0, 160.0)}
    runs = []
    for i in range(15):
        pct, score, mem, speed = far.get(i, (0.30 + 0.004 * i, 0.78 + 0.0015 * i, 1500.0 + 2 * i, 120.0 + i))
        for seed in (1, 2, 3):
            run = run_result(f"method_{i:02d}", seed, score + 0.002 * seed)
            run.efficiency.update(
                trainable_ratio_pct=pct,
                peak_mem_mb=mem + seed,
                peak_mem_kind="cpu_rss",
                train_samples_per_s=speed,
            )
            runs.append(run)
    return lb.build(runs, n_resamples=200).rows


def test_dense_pareto_labels_do_not_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 2: labels of nearby points were drawn on top of each other."""
    figures: list[plt.Figure] = []
    close = plt.close
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figures to measure their labels
    rows = _dense_rows()
    written = plots.pareto_plots(rows, tmp_path)
    assert len(written) == 6 and len(figures) == 3
    for figure in figures:
        (axis,) = figure.axes
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        labels = [text for text in axis.texts if text.get_text()]
        assert len(labels) == len(rows)
        boxes = [text.get_window_extent(renderer) for text in labels]
        overlapping = [
            (labels[i].get_text(), labels[j].get_text())
            for i, j in itertools.combinations(range(len(boxes)), 2)
            if boxes[i].overlaps(boxes[j])
        ]
        assert not overlapping, f"{axis.get_xlabel()}: {overlapping}"
        frame = axis.get_window_extent(renderer).padded(1)  # inside the axes (to a pixel): off the ticks
        outside = [t.get_text() for t, b in zip(labels, boxes, strict=True) if not frame.contains(b.x0, b.y0)]
        outside += [
            t.get_text() for t, b in zip(labels, boxes, strict=True) if not frame.contains(b.x1, b.y1)
        ]
        assert not outside, f"{axis.get_xlabel()}: {outside}"
    memory_axis = figures[1].axes[0].get_xlabel()
    assert "CPU RSS" in memory_axis  # the memory axis names its source
    for figure in figures:
        close(figure)


def test_adjusted_labels_are_byte_identical_when_regenerated(tmp_path: Path) -> None:
    rows = _dense_rows()
    files = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        files.append({p.name: p.read_bytes() for p in plots.pareto_plots(rows, tmp_path / name)})
    assert files[0] == files[1] and len(files[0]) == 6
