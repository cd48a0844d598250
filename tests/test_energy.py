"""Each run records an energy (kWh) and CO₂ (kg) estimate through codecarbon offline: quiet, no files, no
network; without codecarbon, or switched off, the figures are absent and everything that reads results copes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import compose_config, run_result

from peftbench import leaderboard
from peftbench.errors import ConfigError
from peftbench.results import RunResult, compute_run_id, load_results, read_result, write_result
from peftbench.train import run

FAST = ("method=lora", "debug=fast_dev_run", "inference.enabled=false")
ENERGY_KEYS = ("train_energy_kwh", "train_co2_kg", "energy_source")


def test_a_run_records_positive_energy_and_co2_quietly_without_files_or_network(
    make_cfg, monkeypatch, tmp_path: Path, capfd, no_network
) -> None:
    pytest.importorskip("codecarbon")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # codecarbon's default output folder is the working folder
    result = run(make_cfg(*FAST, "callbacks.energy.country_iso_code=fra"))
    figures = result.efficiency
    assert figures["train_energy_kwh"] > 0
    assert figures["train_co2_kg"] > 0
    parts = sum(figures[f"train_energy_{part}_kwh"] for part in ("cpu", "gpu", "ram"))
    assert parts == pytest.approx(figures["train_energy_kwh"], rel=1e-6)
    assert "codecarbon" in figures["energy_source"] and "grid FRA" in figures["energy_source"]
    stored = read_result(result.provenance["result_path"]).efficiency
    assert stored["train_energy_kwh"] == pytest.approx(figures["train_energy_kwh"])
    assert list(workdir.iterdir()) == []  # no emissions.csv, no lock or cache file
    output = capfd.readouterr()
    assert "codecarbon" not in output.out + output.err  # its INFO/WARNING lines stay off the console
    assert no_network == []


def test_switched_off_the_figures_are_absent(make_cfg) -> None:
    result = run(make_cfg(*FAST, "callbacks.energy.enabled=false"))
    assert result.status == "ok"
    assert not set(ENERGY_KEYS) & set(result.efficiency)


def test_without_codecarbon_a_run_goes_on_without_the_figures(make_cfg, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # `import codecarbon` raises ImportError
    result = run(make_cfg(*FAST))
    assert result.status == "ok"
    assert not set(ENERGY_KEYS) & set(result.efficiency)


def test_an_unknown_country_is_refused_by_name(make_cfg) -> None:
    pytest.importorskip("codecarbon")
    with pytest.raises(
        ConfigError, match=r"^callbacks\.energy\.country_iso_code='XYZ': .*allowed: a 3-letter"
    ):
        run(make_cfg(*FAST, "callbacks.energy.country_iso_code=XYZ"))


def test_a_bad_tracking_mode_is_refused_by_name(make_cfg) -> None:
    with pytest.raises(
        ConfigError, match=r"^callbacks\.energy\.tracking_mode='gpu': allowed process, machine"
    ):
        run(make_cfg(*FAST, "callbacks.energy.tracking_mode=gpu"))


def test_the_energy_knobs_leave_run_ids_alone(tmp_path: Path) -> None:
    """Results written before the estimate existed keep their run ids: a resumed sweep still finds them."""
    plain = compose_config(["method=lora"], tmp_path)
    assert compute_run_id(
        compose_config(["method=lora", "callbacks.energy=null"], tmp_path)
    ) == compute_run_id(plain)
    other = compose_config(["method=lora", "callbacks.energy.country_iso_code=DEU"], tmp_path)
    assert compute_run_id(other) == compute_run_id(plain)


def _with_energy(seed: int, kwh: float, kg: float) -> RunResult:
    result = run_result("lora", seed, 0.8 + seed / 100)
    result.efficiency.update(train_energy_kwh=kwh, train_co2_kg=kg, energy_source="codecarbon test")
    return result


def test_the_leaderboard_shows_energy_and_co2_and_a_dash_for_older_files(tmp_path: Path) -> None:
    write_result(run_result("full", 1, 0.7), tmp_path)  # an older file: no energy figures
    for seed in (1, 2):
        write_result(_with_energy(seed, kwh=0.002 * seed, kg=0.001 * seed), tmp_path)
    results, skipped = load_results(tmp_path)
    assert not skipped and len(results) == 3
    rows = leaderboard.aggregate(results)
    cells = {row.method: row for row in rows}
    shown = dict(zip([r.method for r in rows], leaderboard.display_rows(rows), strict=True))
    assert shown["lora"]["energy kWh"] == "0.003"  # the mean over seeds
    assert shown["lora"]["CO₂ g"] == "1.5"
    assert shown["full"]["energy kWh"] == "–" and shown["full"]["CO₂ g"] == "–"
    assert cells["lora"].numbers()["train_co2_kg"] == pytest.approx(0.0015)
    assert "train_energy_kwh" in leaderboard.to_csv(rows).splitlines()[0]
    assert "energy kWh" in leaderboard.markdown(rows)
    assert "CO$_2$ (kg)" in leaderboard.to_latex(rows)  # pdflatex has no glyph for a Unicode subscript
