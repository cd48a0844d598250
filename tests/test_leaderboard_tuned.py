"""The tuned comparison on the leaderboard: tuned and default rows side by side, the learning-rate sensitivity
plot, and the robustness of each method's search (issue "The tuned comparison").

Every result is built by hand (no training), as the stages of experiments/compare/tuned/* record them: a grid
of ``optimizer.lr_factor`` values at the search seed (variant ``trial``), the factor chosen on validation at
seeds 1-5 (variant ``tuned``) and the factor 1 at the same seeds (variant ``default``), all with per-example
test predictions so the rows are compared by the paired bootstrap. The expected robustness values are counted
by hand in ``VAL`` below.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import METHOD_NAMES
from PIL import Image

from peftbench import leaderboard as lb
from peftbench import plots
from peftbench.results import RunResult, write_result

N_TEST = 400
LABELS = np.arange(N_TEST) % 2  # balanced: the majority-class baseline is 0.5
GRID = (0.1, 0.2154, 0.4642, 1.0, 2.154, 4.642, 10.0)  # as experiments/compare/tuned/search.yaml
SPACE = {"optimizer.lr_factor": ",".join(str(f) for f in GRID)}
BASE_LR = {"lora": 5.0e-4, "ia3": 3.0e-3}  # conf/method/{lora,ia3}.yaml meta.lr
SECTION = "synthetic-tiny-bert-400-steps-x-16"

# Validation accuracy of each grid point (None: the trial diverged). Counted by hand:
# lora: best 0.805 at x2.154; within 0.01 of it: 0.795 (exactly 1 point: counts), 0.80, 0.805 -> 3 of 7.
# ia3: best 0.79 at x0.4642 and x1 (a tie: the smaller factor); within: 0.78, 0.785, 0.79, 0.79, 0.788 -> 5 of 7
#      (0.70 is 9 points below; the diverged trial finished without a usable model: outside).
VAL = {
    "lora": (0.70, 0.75, 0.795, 0.80, 0.805, 0.79, 0.60),
    "ia3": (0.78, 0.785, 0.79, 0.79, 0.788, 0.70, None),
}
CHOSEN = {"lora": 2.154, "ia3": 0.4642}
ROBUST = {"lora": "3/7", "ia3": "5/7"}
# Test accuracy of the reported rows: tuned lora is the best row.
TEST = {("lora", "tuned"): 0.85, ("lora", "default"): 0.79, ("ia3", "tuned"): 0.78, ("ia3", "default"): 0.74}


def _id(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _predictions(accuracy: float, *parts: object) -> list[int]:
    """Exactly round(accuracy * N_TEST) test examples right, at positions fixed by ``parts``."""
    rng = np.random.default_rng(int(_id(*parts), 16) % 2**32)
    correct = np.zeros(N_TEST, dtype=int)
    correct[rng.choice(N_TEST, round(accuracy * N_TEST), replace=False)] = 1
    return np.where(correct == 1, LABELS, 1 - LABELS).tolist()


def _run(
    method: str,
    seed: int,
    factor: float,
    variant: str,
    test: float,
    val: float | None,
    search: dict | None = None,
    status: str = "ok",
    lr: float | None = None,
) -> RunResult:
    """One run as the trainer records it: the effective lr is optimizer.lr x optimizer.lr_factor."""
    lr = BASE_LR[method] if lr is None else lr
    pred = _predictions(test, method, seed, factor, variant)
    config = {
        "seed": seed,
        "method": {"name": method, "impl": "peft_tuner", "meta": {"lr": lr}},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": lr, "lr_factor": factor},
        "trainer": {"precision": "32-true", "max_steps": 400, "accumulate_grad_batches": 1},
        "task": {
            "name": "synthetic", "headline": "accuracy", "monitor": "val/accuracy", "monitor_mode": "max",
            "num_labels": 2, "batch_size": 16, "max_steps": 400,
        },
    }  # fmt: skip
    return RunResult(
        run_id=_id(method, seed, factor, variant),
        task="synthetic",
        model="tiny-bert",
        method=method,
        seed=seed,
        study="tuned-test",
        status=status,
        variant=variant,
        search=search,
        test={"test/accuracy": float(np.mean(np.array(pred) == LABELS))} if status == "ok" else {},
        val_best={} if val is None else {"val/accuracy": val},
        selection={
            "monitor": "val/accuracy",
            "mode": "max",
            "chosen": "best",
            "best_step": 300,
            "global_steps": 400,
        },  # fmt: skip
        efficiency={
            "trainable_params": 1000,
            "trainable_ratio_pct": 0.5,
            "peak_mem_mb": 900.0,
            "peak_mem_kind": "cpu_rss",
            "train_samples_per_s": 100.0,
            "train_time_s": 10.0,
        },  # fmt: skip
        budget={"steps": 400, "max_steps": 400, "batch_size": 16},
        data={"sizes": {"train": 800, "validation": 200, "test": N_TEST}},
        predictions={"test": {"pred": pred, "label": LABELS.tolist()}} if status == "ok" else {},
        precision="32-true",
        config=config,
        provenance={"device": {"accelerator": "cpu"}},
        ended_at=f"2026-02-{seed + 1:02d}T00:00:00+00:00",
        schema_version=3,
        error=None if status == "ok" else "RunDiverged: loss is nan",
    )


def _trials(
    method: str,
    test_scores: dict[float, float] | None = None,
    vals: tuple[float | None, ...] | None = None,
    lr: float | None = None,
) -> list[RunResult]:
    """The 7 grid trials of one method at seed 0. Their test scores are made to disagree with validation (the
    best test score sits at the smallest factor), so a choice that peeked at test would show."""
    out = []
    for factor, val in zip(GRID, vals or VAL[method], strict=True):
        test = (test_scores or {}).get(factor, 0.95 if factor == GRID[0] else 0.6)
        search = {
            "sweeper": "grid",
            "keys": ["optimizer.lr_factor"],
            "space": SPACE,
            "sweep_dir": "/sweeps/search",
        }
        status = "ok" if val is not None else "diverged"
        out.append(_run(method, 0, factor, "trial", test, val, search=search, status=status, lr=lr))
    return out


def _study(test_scores: dict[float, float] | None = None) -> list[RunResult]:
    """2 methods x (7 grid trials + 5 tuned seeds + 5 default seeds)."""
    results = []
    for method in ("lora", "ia3"):
        trials = _trials(method, test_scores)
        best = next(t for t in trials if t.config["optimizer"]["lr_factor"] == CHOSEN[method])
        record = {
            "sweeper": "grid", "rule": "best validation score", "chosen": {"optimizer.lr_factor": CHOSEN[method]},
            "chosen_run_id": best.run_id, "search_seed": 0, "trials_run": 7,
            "trials_ok": sum(t.status == "ok" for t in trials), "space": SPACE,
        }  # fmt: skip
        results += trials
        for seed in range(1, 6):
            results.append(
                _run(method, seed, CHOSEN[method], "tuned", TEST[(method, "tuned")], 0.8, search=record)
            )
            results.append(_run(method, seed, 1.0, "default", TEST[(method, "default")], 0.79))
    return results


def _run_copy(trial: RunResult, method: str) -> RunResult:
    """A trial under another method's name (a search of a second method with the same grid)."""
    copy = RunResult.from_dict(trial.to_dict())
    copy.method, copy.run_id = method, method + trial.run_id
    copy.config = {**copy.config, "method": {**copy.config["method"], "name": method}}
    return copy


def _board(results: list[RunResult], **options) -> lb.Leaderboard:
    return lb.build(results, n_resamples=300, **options)


def test_tuned_and_default_rows_stand_side_by_side_against_one_reference() -> None:
    board = _board(_study())
    rows = {row.label: row for row in board.rows}
    assert set(rows) == {"lora tuned (7 trials)", "lora default", "ia3 tuned (7 trials)", "ia3 default"}
    assert {(r.method, r.variant) for r in rows.values()} == set(TEST)  # no trial became a row
    assert all(r.n == 5 and [x.seed for x in r.runs] == [1, 2, 3, 4, 5] for r in rows.values())
    best = rows["lora tuned (7 trials)"]
    assert best.group == "best" and board.rows[0] is best
    for row in rows.values():  # every row against the same reference, by the paired bootstrap
        assert row.reference == best.label
        if row is not best:
            assert row.difference.method == "paired bootstrap over seeds x test examples"
            assert row.difference.estimate == pytest.approx(TEST[(row.method, row.variant)] - 0.85)
    # The tuned row's config is the chosen factor; the default row's the factor 1: they never pool.
    assert {r.config["optimizer"]["lr_factor"] for r in rows["lora tuned (7 trials)"].runs} == {2.154}
    assert {r.config["optimizer"]["lr_factor"] for r in rows["lora default"].runs} == {1.0}


def test_without_a_tuned_row_a_default_row_keeps_its_plain_label() -> None:
    """Only a method with a tuned row in the table needs `default` spelled out: other tables stay as they were."""
    rows = [r.label for r in _board([r for r in _study() if r.variant != "tuned"]).rows]
    assert sorted(rows) == ["ia3", "lora"]


def test_trials_become_rows_only_when_asked() -> None:
    results = _study()
    assert not [r for r in _board(results).rows if r.variant == "trial"]
    trial_rows = [r for r in _board(results, include_trials=True).rows if r.variant == "trial"]
    assert len(trial_rows) == 7 + 6  # every finished ok trial: one seed each; the diverged one is no row
    assert "lora trial lr_factor=2.154" in {r.label for r in trial_rows}


def test_robustness_chosen_factor_and_trials_are_counted_on_validation() -> None:
    board = _board(_study())
    for row in board.rows:
        search = row.search
        assert search is not None and search.method == row.method
        assert search.tolerance == 0.01  # accuracy: a fraction, so 1 point is 0.01
        assert (search.within, len(search.finished), len(search.trials)) == (
            int(ROBUST[row.method][0]), 7, 7,
        )  # fmt: skip
        assert search.best.config["optimizer"]["lr_factor"] == CHOSEN[row.method]
        assert search.best_score == max(v for v in VAL[row.method] if v is not None)
        cells = lb.search_cells(row)
        assert cells == {
            "chosen": f"lr_factor={CHOSEN[row.method]:g}",
            "trials": "7",
            "robust": ROBUST[row.method],
        }
        assert not [f for f in row.flags if "search" in f]  # chosen in the grid's interior, as recorded


def test_tables_show_the_search_columns(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    for result in _study():
        write_result(result, results_dir)
    out = tmp_path / "board"
    assert lb.main([str(results_dir), "--out", str(out), "--resamples", "300"]) == 0
    markdown = (out / "leaderboard.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| row"))
    assert [c.strip() for c in header.split("|")][7:10] == ["chosen", "trials", "robust"]  # after n
    line = next(line for line in markdown.splitlines() if line.startswith("| lora default "))
    assert [c.strip() for c in line.split("|")][7:10] == ["lr_factor=2.154", "7", "3/7"]
    assert "robust: finished trials of the method's search" in markdown  # the footnote says the rule
    rows = {r["label"]: r for r in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    ia3 = rows["ia3 tuned (7 trials)"]
    assert ia3["search_chosen"] == "optimizer.lr_factor=0.4642"
    assert (ia3["search_within"], ia3["search_finished"], ia3["search_trials"], ia3["search_grid"]) == (
        "5", "7", "7", "7",
    )  # fmt: skip
    assert float(ia3["search_best_val"]) == 0.79 and float(ia3["search_tolerance"]) == 0.01
    assert ia3["search_monitor"] == "val/accuracy"
    assert ia3["search_lead"] == "0.0" and float(
        rows["lora tuned (7 trials)"]["search_lead"]
    ) == pytest.approx(0.005)
    latex = (out / "leaderboard.tex").read_text()
    assert "Chosen & Trials & Robust" in latex and r"lr\_factor=0.4642 & 7 & 5/7" in latex
    page = (out / "leaderboard.html").read_text()
    assert ">robust</th>" in page and '<td data-sort="0.7142857142857143">5/7</td>' in page
    report = (out / "report.md").read_text()
    for suffix in (".png", ".svg"):
        assert (out / f"sensitivity_{SECTION}{suffix}").is_file()
    assert f"![sensitivity_{SECTION}](sensitivity_{SECTION}.png)" in report


def test_results_without_searches_keep_their_tables() -> None:
    """The committed leaderboards must regenerate byte for byte: no search, no new column or CSV field."""
    plain = [r for r in _study() if r.variant == "default"]
    board = _board(plain)
    assert all(row.search is None for row in board.rows) and not board.searches
    assert lb.to_csv(board.rows).splitlines()[0] == ",".join(lb.CSV_FIELDS)
    assert "chosen" not in lb.markdown(board.rows, board=board)
    assert "tuned − default" not in lb.markdown(board.rows, board=board)
    assert "Chosen" not in lb.to_latex(board.rows, board=board)


def test_the_sensitivity_plot_is_a_real_image_of_validation_scores(tmp_path: Path) -> None:
    board = _board(_study())
    written = lb.write_outputs(board.rows, _study(), [], tmp_path, tmp_path, board=board, html=False)
    png, svg = tmp_path / f"sensitivity_{SECTION}.png", tmp_path / f"sensitivity_{SECTION}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg.read_bytes().lstrip().startswith(b"<?xml")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] >= 600 and image.size[1] >= 300
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert "report" in written


def test_sensitivity_curves_plot_validation_against_the_effective_lr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to read what it drew
    board = _board(_study())
    plots.sensitivity_plot(board.searches[("synthetic", "tiny-bert", "400 steps x 16")], tmp_path, "x")
    (figure,) = figures
    panels = {axis.get_title().split("\n")[0]: axis for axis in figure.axes if axis.get_title()}
    assert set(panels) == {"lora", "ia3"}
    for method, axis in panels.items():
        assert axis.get_xscale() == "log"
        curve = next(line for line in axis.get_lines() if line.get_gid() == "curve")
        finished = [(f, v) for f, v in zip(GRID, VAL[method], strict=True) if v is not None]
        assert list(curve.get_xdata()) == pytest.approx([BASE_LR[method] * f for f, _ in finished])
        assert list(curve.get_ydata()) == pytest.approx([v for _, v in finished])  # validation, never test
        chosen = next(line for line in axis.get_lines() if line.get_gid() == "chosen")
        assert list(chosen.get_xdata()) == pytest.approx([BASE_LR[method] * CHOSEN[method]])
        assert f"robust {ROBUST[method]}" in axis.get_title()
    _assert_texts_apart(figure, [axis.title for axis in panels.values()])  # two panels: a narrow figure


def test_trial_test_scores_change_nothing_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test scores never select: trials whose test scores are reshuffled give byte-identical outputs (tables,
    page, report, sensitivity plot)."""
    outputs = []
    for name, scores in (("a", None), ("b", {f: 0.5 + 0.05 * i for i, f in enumerate(GRID)})):
        folder = tmp_path / name
        for result in _study(scores):
            write_result(result, folder / "results")
        monkeypatch.chdir(folder)
        assert lb.main(["results", "--out", "out", "--resamples", "300"]) == 0
        outputs.append({p.name: p.read_bytes() for p in sorted((folder / "out").iterdir())})
    assert outputs[0].keys() == outputs[1].keys() and f"sensitivity_{SECTION}.svg" in outputs[0]
    assert outputs[0] == outputs[1]


def test_a_search_before_its_report_stage_still_gets_its_plot(tmp_path: Path) -> None:
    """The search stage ran, the report stage not yet: no rows, but the sensitivity plot and a report section."""
    results_dir = tmp_path / "results"
    for result in (r for r in _study() if r.variant == "trial"):
        write_result(result, results_dir)
    out = tmp_path / "board"
    assert lb.main([str(results_dir), "--out", str(out), "--no-html"]) == 0
    report = (out / "report.md").read_text()
    assert "## Searches without reported rows: synthetic · tiny-bert · 400 steps x 16" in report
    assert f"![sensitivity_{SECTION}](sensitivity_{SECTION}.png)" in report
    assert (out / f"sensitivity_{SECTION}.svg").is_file()


def test_unfinished_trials_and_percent_scales() -> None:
    """A trial that failed (not diverged) says nothing about the lr: out of the fraction, and the trials cell
    names the grid it falls short of. A metric in percent: 1 point is 1.0."""
    results = _study()
    lost = next(r for r in results if r.method == "lora" and r.variant == "trial" and r.seed == 0)
    lost.status, lost.val_best, lost.test, lost.predictions = "failed", {}, {}, {}
    (search,) = [s for s in lb.summarize_searches(results) if s.method == "lora"]
    assert (search.within, len(search.finished), len(search.trials), search.grid) == (3, 6, 7, 7)
    row = next(r for r in _board(results).rows if r.label == "lora default")
    assert lb.search_cells(row) == {"chosen": "lr_factor=2.154", "trials": "6/7", "robust": "3/6"}
    for trial in (r for r in results if r.variant == "trial" and r.val_best):
        trial.val_best = {"val/accuracy": 100 * trial.val_best["val/accuracy"]}
    (search,) = [s for s in lb.summarize_searches(results) if s.method == "ia3"]
    assert search.tolerance == 1.0 and search.within == 5


def test_a_grid_point_run_twice_counts_once() -> None:
    """Two results of one grid point (another run id, e.g. after the run-id rule changed): the newer one
    stands for the point, so the fraction stays over the grid's 7 points."""
    results = _study()
    again = _trials("lora", vals=(0.80, *VAL["lora"][1:]))[0]  # x0.1 again, now 0.80 on validation
    again.run_id, again.ended_at = "rerun", "2026-03-01T00:00:00+00:00"
    (search,) = [s for s in lb.summarize_searches([*results, again]) if s.method == "lora"]
    assert (
        len(search.trials) == 7 and again in search.trials and (search.within, len(search.finished)) == (4, 7)
    )


def test_a_tuned_row_whose_choice_is_no_longer_the_best_or_at_the_edge_is_flagged() -> None:
    results = _study()
    for trial in (r for r in results if r.method == "lora" and r.variant == "trial"):
        if trial.config["optimizer"]["lr_factor"] == 10.0:  # a later trial beats the recorded choice
            trial.val_best = {"val/accuracy": 0.9}
    rows = {r.label: r for r in _board(results).rows}
    flags = rows["lora tuned (7 trials)"].flags
    assert "chosen lr_factor=2.154 is not the search's best now (lr_factor=10): 5/5 runs" in flags
    assert not [f for f in flags if "edge" in f]  # the runs ran 2.154: inside the grid
    assert not [f for f in rows["lora default"].flags if "search" in f]
    # The report stage run after that trial: the choice is 10, the grid's largest factor.
    for run in (r for r in results if r.method == "lora" and r.variant == "tuned"):
        run.config["optimizer"]["lr_factor"] = 10.0
        run.search = {**run.search, "chosen": {"optimizer.lr_factor": 10.0}}
    flags = next(r for r in _board(results).rows if r.label == "lora tuned (7 trials)").flags
    assert flags == ["chosen lr_factor=10 is at the grid's edge: the best may lie outside the searched range"]


@pytest.mark.slow  # ~22-26 s of real jobs or figures: the default suite stays under 10 minutes
def test_many_methods_give_readable_small_multiples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~40 searched methods: one panel per method (grouped by family), no two titles over each other."""
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    methods = METHOD_NAMES
    assert len(methods) >= 40 and set(methods) <= set(plots.METHOD_FAMILIES)  # every method has a family
    trials = []
    for i, method in enumerate(methods):
        vals = tuple(0.6 + 0.03 * min(k, 6 - k) + 0.001 * i for k in range(7))
        trials += _trials(method, vals=vals, lr=1e-4 * (1 + i % 5))
    written = plots.sensitivity_plot(lb.summarize_searches(trials), tmp_path, "many")
    assert [p.name for p in written] == ["sensitivity_many.png", "sensitivity_many.svg"]
    (figure,) = figures
    titles = [axis.title for axis in figure.axes if axis.title.get_text()]
    assert sorted(t.get_text().split("\n")[0] for t in titles) == sorted(methods)
    _assert_texts_apart(figure, titles)


def _assert_texts_apart(figure: plt.Figure, titles: list) -> None:
    """No two of the figure's texts (panel titles, legend entries and title, axis labels) cover each other,
    and each lies inside the figure."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    texts = [*titles, *legend.get_texts(), legend.get_title(), *figure.texts]
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlapping = [
        (texts[i].get_text(), texts[j].get_text())
        for i, j in itertools.combinations(range(len(boxes)), 2)
        if boxes[i].overlaps(boxes[j])
    ]
    assert not overlapping
    frame = figure.bbox.padded(1)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


def test_a_tuned_row_carries_its_gain_over_its_default_row(tmp_path: Path) -> None:
    """What the search bought: tuned − default, paired by seed and test example, Holm over the methods; a
    default row has no gain of its own. The columns and CSV fields appear only beside tuned rows."""
    board = _board(_study())
    rows = {row.label: row for row in board.rows}
    for method in ("lora", "ia3"):
        tuned, default = rows[f"{method} tuned (7 trials)"], rows[f"{method} default"]
        assert default.gain is None
        assert tuned.gain.method == "paired bootstrap over seeds x test examples"
        assert tuned.gain.estimate == pytest.approx(TEST[(method, "tuned")] - TEST[(method, "default")])
        assert tuned.gain.low < tuned.gain.estimate < tuned.gain.high
        assert tuned.gain_p_holm >= tuned.gain_p  # adjusted over the two methods
    # lora's 6 points are shown; ia3's 4 are not (its right answers fall on other examples in each arm, so the
    # pairing removes little noise): the column says which gains the data supports.
    assert rows["lora tuned (7 trials)"].gain.low > 0 and rows["lora tuned (7 trials)"].gain_p_holm < 0.05
    assert rows["ia3 tuned (7 trials)"].gain_p_holm >= 0.05
    markdown = lb.markdown(board.rows, board=board)
    header = next(line for line in markdown.splitlines() if line.startswith("| row"))
    assert [c.strip() for c in header.split("|")][10:12] == ["tuned − default [95% CI]", "p gain (Holm)"]
    line = next(line for line in markdown.splitlines() if line.startswith("| lora tuned"))
    assert [c.strip() for c in line.split("|")][10].startswith("+0.0600 [")
    assert "tuned − default: a tuned row minus its method's default row" in markdown
    fields = lb.to_csv(board.rows).splitlines()[0].split(",")
    assert fields[-len(lb.GAIN_FIELDS) :] == list(lb.GAIN_FIELDS)


def test_a_search_that_chose_the_default_gains_exactly_nothing() -> None:
    """Factor 1 chosen: the report stage copies the default runs (sweeps.finished_point), so tuned and default
    hold the same predictions and the gain is 0 with p = 1: never a spurious difference."""
    results = [r for r in _study() if r.method == "lora" and r.variant != "tuned"]
    for seed in range(1, 6):
        default = next(r for r in results if r.variant == "default" and r.seed == seed)
        copy = RunResult.from_dict({**default.to_dict(), "variant": "tuned", "run_id": default.run_id + "t"})
        copy.search = {
            "sweeper": "grid",
            "chosen": {"optimizer.lr_factor": 1.0},
            "trials_run": 7,
            "space": SPACE,
        }
        results.append(copy)
    tuned = next(row for row in _board(results).rows if row.variant == "tuned")
    assert tuned.gain.estimate == 0 and tuned.gain.low == tuned.gain.high == 0
    assert tuned.gain_p_holm == 1.0


def _readme(tmp_path: Path, arguments: str, body: str = "old table\n") -> Path:
    results_dir = tmp_path / "results"
    for result in _study():
        write_result(result, results_dir)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\nBefore.\n\n<!-- peftbench-leaderboard {arguments} -->\n{body}<!-- /peftbench-leaderboard -->\n"
        "\nAfter.\n"
    )
    return readme


def test_a_readme_block_is_regenerated_from_its_results(tmp_path: Path, capsys) -> None:
    """The README's headline names the command that makes it; --check says when it no longer matches the
    results, and --readme rewrites it, leaving the prose around it alone."""
    columns = "row,group,accuracy [95% CI],tuned − default [95% CI],chosen"
    readme = _readme(tmp_path, f'results --resamples 300 --per-method --columns "{columns}"')
    assert lb.main(["--readme", str(readme), "--check"]) == 1
    assert "stale: peftbench-leaderboard results" in capsys.readouterr().out
    assert lb.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nBefore.\n\n<!-- peftbench-leaderboard results") and text.endswith(
        "\nAfter.\n"
    )
    assert "old table" not in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in table[0].split("|")[1:-1]] == columns.split(",")
    assert [line.split("|")[1].strip() for line in table[1:]] == [
        "lora tuned (7 trials)",
        "ia3 tuned (7 trials)",
    ]
    assert "- tuned − default: a tuned row minus its method's default row" in text  # the footnotes come along
    assert lb.main(["--readme", str(readme), "--check"]) == 0  # now current


def test_a_readme_block_with_a_bad_column_or_no_block_fails(tmp_path: Path, capsys) -> None:
    readme = _readme(tmp_path, "results --resamples 300 --columns row,colour")
    assert lb.main(["--readme", str(readme), "--check"]) == 2
    assert "no column 'colour'; this table has: row, group," in capsys.readouterr().err
    readme.write_text("# no block here\n")
    assert lb.main(["--readme", str(readme), "--check"]) == 1  # a mistyped marker must not pass silently


def test_the_grid_searches_as_a_table_of_validation_scores(tmp_path: Path, capsys) -> None:
    """The sensitivity plot's numbers: a row per method, a column per factor, the choice in bold, a diverged
    trial marked, then the choice, its checkpoint's step and the robustness; in report.md and --searches."""
    board = _board(_study())
    table = lb.search_table(board.searches[next(iter(board.searches))])
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert header == [
        "method (its lr)",
        *(f"lr_factor={lb._value_text(f)}" for f in GRID),
        "chosen",
        "lead",
        "best step",
        "robust",
    ]
    lora = [c.strip() for c in next(line for line in lines if line.startswith("| lora")).split("|")[1:-1]]
    assert lora[0] == "lora (0.0005)" and lora[1:8] == [
        "0.7000",
        "0.7500",
        "0.7950",
        "0.8000",
        "**0.8050**",
        "0.7900",
        "0.6000",
    ]
    # lead: 0.805 against the runner-up's 0.800 on 200 validation examples is one example
    assert lora[8:] == ["lr_factor=2.154", "+1 of 200", "300/400", ROBUST["lora"]]
    ia3 = [c.strip() for c in next(line for line in lines if line.startswith("| ia3")).split("|")[1:-1]]
    assert ia3[3] == "**0.7900**" and ia3[4] == "0.7900" and ia3[7] == "div."  # the tie goes to the smaller
    assert ia3[9] == "0 (tie)"
    assert "lead: how many more validation examples" in table
    assert lines.index(next(line for line in lines if line.startswith("| lora"))) < lines.index(
        next(line for line in lines if line.startswith("| ia3"))
    )  # best validation first
    results_dir = tmp_path / "results"
    for result in _study():
        write_result(result, results_dir)
    assert lb.main([str(results_dir), "--searches", "--resamples", "300"]) == 0
    assert "| lora (0.0005) " in capsys.readouterr().out
    lb.main([str(results_dir), "--out", str(tmp_path / "board"), "--resamples", "300", "--no-html"])
    assert "### The grid searches\n\n| method (its lr)" in (tmp_path / "board" / "report.md").read_text()


def test_an_unfinished_search_says_its_choice_is_so_far() -> None:
    partial = [
        r
        for r in _study()
        if not (r.variant == "trial" and r.method == "lora" and r.config["optimizer"]["lr_factor"] == 10.0)
    ]
    for result in partial:  # the grid on record, as a study's sweeper params leave it
        if result.variant == "trial":
            result.search = {**result.search, "space": SPACE}
    board = _board(partial)
    lines = lb.search_table(board.searches[next(iter(board.searches))]).splitlines()
    lora = [c.strip() for c in next(line for line in lines if line.startswith("| lora")).split("|")[1:-1]]
    assert lora[7] == "–" and lora[8] == "lr_factor=2.154 (so far: 6/7 run)"


def test_searches_over_two_keys_get_a_table_each() -> None:
    """A study that searches the head's lr (head-only) and the methods' lr gets two grids; one key must not
    swallow the other's searches."""
    head = []
    for trial, head_lr in zip(_trials("lora"), (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), strict=True):
        copy = _run_copy(trial, "head_only")
        copy.config["optimizer"] = {**copy.config["optimizer"], "lr_factor": 1.0, "head_lr": head_lr}
        copy.search = {**copy.search, "keys": ["optimizer.head_lr"], "space": None}
        head.append(copy)
    board = _board([*_study(), *head])
    text = lb.search_table(board.searches[next(iter(board.searches))])
    headers = [line for line in text.splitlines() if line.startswith("| method (its lr)")]
    assert (
        len(headers) == 2
        and any("head_lr=0.001" in h for h in headers)
        and any("lr_factor=1 " in h for h in headers)
    )
    assert "| head_only (0.0005) " in text and "| lora (0.0005) " in text


def test_a_search_whose_every_trial_diverged_has_a_row_and_no_choice() -> None:
    """No trial finished ok, so the search has no best: the grid still shows the method (every cell `div.`),
    with no choice and no step, instead of failing on the missing best trial."""
    board = _board([*_study(), *[_run_copy(t, "vera") for t in _trials("lora", vals=(None,) * len(GRID))]])
    table = lb.search_table(board.searches[next(iter(board.searches))])
    vera = [
        c.strip()
        for c in next(line for line in table.splitlines() if line.startswith("| vera")).split("|")[1:-1]
    ]
    assert vera[1:8] == ["div."] * 7 and vera[8:] == [
        "–",
        "–",
        "–",
        "–",
    ]  # no choice, lead, step or robustness
