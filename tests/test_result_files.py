"""Result files as readers meet them: corrupt ones are skipped with one line everywhere, a failed write loses
nothing, and no machine-local absolute path is recorded (issue: no result is ever lost).

Before these fixes a non-UTF-8 or wrongly typed file crashed ``peftbench-leaderboard`` and ``init_from``, a
truncated one crashed ``peftbench-export`` with a traceback, a full disk left a temporary file behind and lost
the result, and every file carried the home cache, the checkout and the sweep folder as absolute paths.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import run_result
from omegaconf import OmegaConf

from peftbench import export, hydra_callbacks, init_from, results_cli
from peftbench import leaderboard as lb
from peftbench import results as results_module
from peftbench.errors import ConfigError
from peftbench.reproduction.cli import compare_main
from peftbench.resources import PACKAGE_DIR
from peftbench.results import (
    ResultSchemaError,
    ResultWriteError,
    find_ok_result,
    locate,
    portable,
    read_result,
    scan_results,
    write_result,
)


def _valid() -> dict:
    return json.loads(json.dumps(run_result("lora", 1, 0.8).to_dict()))


def _edit(**changes):
    def make() -> bytes:
        data = _valid()
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for key in parents:
                node = node[key]
            if value is KeyError:
                del node[last]
            else:
                node[last] = value
        return json.dumps(data).encode()

    return make


# Each makes the bytes of a file that is not a readable result; the id names the defect.
CORRUPT = {
    "empty": lambda: b"",
    "truncated": lambda: json.dumps(_valid()).encode()[:200],
    "not_utf8": lambda: json.dumps(_valid()).encode().replace(b'"lora"', b'"lo\xff\xfera"'),
    "a_list": lambda: b"[1, 2, 3]",
    "null": lambda: b"null",
    "a_string": lambda: b'"result"',
    "deeply_nested": lambda: b"[" * 100_000 + b"]" * 100_000,
    "no_schema_version": _edit(schema_version=KeyError),
    "future_schema": _edit(schema_version=99),
    "schema_as_text": _edit(schema_version="3"),
    "unknown_key": _edit(extra_field=1),
    "no_run_id": _edit(run_id=KeyError),
    "run_id_number": _edit(run_id=123),
    "bad_status": _edit(status="bogus"),
    "seed_text": _edit(seed="one"),
    "seed_bool": _edit(seed=True),
    "seed_float": _edit(seed=1.5),
    "test_a_list": _edit(test=[0.8]),
    "metric_text": _edit(test={"test/accuracy": "0.8"}),
    "figure_text": _edit(efficiency__peak_mem_mb="big"),
    "budget_text": _edit(budget__max_steps="40"),
    "config_text": _edit(config="lora"),
    "task_config_list": _edit(config__task=["accuracy"]),
    "headline_number": _edit(config__task__headline=1),
    "predictions_not_lists": _edit(predictions={"test": {"pred": 1, "label": 1}}),
    "predictions_uneven": _edit(predictions={"test": {"pred": [1, 0], "label": [1]}}),
    "curve_an_object": _edit(curve={"step": 1}),
    "curve_without_step": _edit(curve=[{"val/accuracy": 0.5}]),
    "best_step_text": _edit(selection__best_step="400"),
    "device_a_list": _edit(provenance={"device": ["cpu"]}),
    "search_a_list": _edit(search=["optuna"]),
}


def _folder_with(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A results folder with two good results (seeds 1, 2) and one corrupt file."""
    folder = tmp_path / "results"
    for seed in (1, 2):
        write_result(run_result("lora", seed, 0.8), folder)
    bad = folder / f"synthetic__tiny-bert__lora__seed3__{name}.json"
    bad.write_bytes(CORRUPT[name]())
    return folder, bad


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_a_corrupt_file_is_a_schema_error_naming_why(tmp_path: Path, name: str) -> None:
    _, bad = _folder_with(tmp_path, name)
    with pytest.raises(ResultSchemaError) as caught:
        read_result(bad)
    assert str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_the_leaderboard_skips_a_corrupt_file_with_one_warning_and_counts_it(
    tmp_path: Path, name: str, capsys
) -> None:
    folder, bad = _folder_with(tmp_path, name)
    assert lb.main([str(folder), "--out", str(tmp_path / "board"), "--no-plots", "--resamples", "100"]) == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if str(bad) in line]
    assert warning.startswith(f"warning: skipped {bad}: ")
    report = (tmp_path / "board" / "report.md").read_text()
    assert "2 result file(s); 1 file(s) skipped" in report and bad.name in report
    assert "| 2 |" in (tmp_path / "board" / "leaderboard.md").read_text()  # both good seeds pooled


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_the_other_readers_skip_a_corrupt_file(tmp_path: Path, name: str, caplog) -> None:
    folder, bad = _folder_with(tmp_path, name)
    loaded, skipped = scan_results(folder)
    assert len(loaded) == 2 and [path for path, _ in skipped] == [bad]
    # resume: a corrupt file under a run id is not a finished point
    assert find_ok_result(folder, bad.stem.rsplit("__", 1)[1]) is None
    # the end-of-sweep callbacks (tuned selection, comparison table) still see the good runs
    sweep = tmp_path / "sweep"
    for _path, result in loaded:
        result.sweep_dir = str(sweep.resolve())
        write_result(result, folder)
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep)}}, "paths": {"results_dir": str(folder)}}
    )
    assert len(hydra_callbacks._sweep_results(config)) == 2
    assert any(str(bad) in record.getMessage() for record in caplog.records)
    # init_from by selection keys: the good run is found; the corrupt file is no candidate and no crash
    cfg = OmegaConf.create(
        {
            "init_from": {"task": "synthetic", "method": "lora", "seed": 3, "study": "s"},
            "paths": {"results_dir": str(folder)},
            "task": {"name": "synthetic"},
            "model": {"name": "tiny-bert"},
            "method": {"name": "lora"},
            "seed": 3,
        }
    )
    with pytest.raises(ConfigError, match="no ok result"):
        init_from.resolve(cfg)


def test_compare_skips_corrupt_files_and_its_report_counts_them(tmp_path: Path, capsys) -> None:
    """Four kinds of corruption in one folder (one compare: it composes the whole reproduction grid)."""
    kinds = ["truncated", "not_utf8", "metric_text", "deeply_nested"]
    folder, _ = _folder_with(tmp_path, kinds[0])
    bad = [folder / f"synthetic__tiny-bert__lora__seed3__{name}.json" for name in kinds]
    for path, name in zip(bad[1:], kinds[1:], strict=True):
        path.write_bytes(CORRUPT[name]())
    out = tmp_path / "out"
    args = ["lora_glue_base/table2", "--dry-run", "--results", str(folder), "--out", str(out)]
    assert compare_main(args) == 0
    err = capsys.readouterr().err
    assert all(f"warning: skipped {path}: " in err for path in bad), err
    report = (out / "compare.md").read_text()
    assert "**Files skipped** (4, not results)" in report and all(path.name in report for path in bad)
    skipped = json.loads((out / "compare.json").read_text())["skipped"]
    assert sorted(line.split(":")[0] for line in skipped) == sorted(str(path) for path in bad)


@pytest.mark.parametrize("name", ["truncated", "not_utf8", "seed_text", "config_text"])
def test_export_of_a_corrupt_file_is_one_line_not_a_traceback(tmp_path: Path, name: str, capsys) -> None:
    _, bad = _folder_with(tmp_path, name)
    assert export.main([str(bad), "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"peftbench-export: {bad}: ")


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_result(tmp_path: Path, monkeypatch) -> None:
    folder, elsewhere = tmp_path / "results", tmp_path / "run_output"
    earlier = write_result(run_result("lora", 1, 0.8), folder)
    real_fsync, calls = os.fsync, []

    def full_disk(handle: int) -> None:  # fails after the temporary file exists and holds the text
        calls.append(handle)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(handle)

    monkeypatch.setattr(results_module.os, "fsync", full_disk)
    finished = run_result("lora", 2, 0.9, output_dir=str(elsewhere))
    with pytest.raises(ResultWriteError) as caught:
        write_result(finished, folder)
    assert sorted(p.name for p in folder.iterdir()) == [earlier.name]  # the temporary file is gone
    kept = elsewhere / finished.filename
    message = str(caught.value)
    assert "No space left on device" in message and str(kept) in message and str(folder) in message
    assert read_result(kept).test == finished.test  # recoverable: a complete result, moved in by hand


def test_a_failed_write_falls_back_to_the_temp_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(results_module.tempfile, "tempdir", str(tmp_path / "tmp"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    finished = run_result("lora", 2, 0.9, output_dir=str(blocked / "out"))  # output folder unusable too
    with pytest.raises(ResultWriteError) as caught:
        write_result(finished, blocked / "results")
    kept = tmp_path / "tmp" / "peftbench-unsaved" / finished.filename
    assert str(kept) in str(caught.value) and read_result(kept).seed == 2


def test_recorded_paths_are_portable_and_locate_back(tmp_path: Path, monkeypatch) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project.mkdir() or project)
    fixture = PACKAGE_DIR / "tasks" / "fixtures" / "mr" / "corpus.csv"
    result = run_result(
        "lora",
        1,
        0.8,
        output_dir=str(project / "multirun" / "0_lora"),
        sweep_dir=str(project / "multirun"),
        error=f"FileNotFoundError: {home}/.cache/peftbench/x.csv",
        config={
            "task": {"headline": "accuracy", "source": {"data_files": str(fixture)}},
            "paths": {"data_dir": f"{home}/.cache/peftbench", "elsewhere": "/srv/data/x.csv"},
        },
        provenance={"trainable_weights": str(project / "multirun" / "0_lora" / "trainable.safetensors")},
    )
    path = write_result(result, project / "results")
    text = path.read_text()
    assert str(tmp_path) not in text and str(PACKAGE_DIR) not in text
    back = read_result(path)
    assert back.output_dir == "./multirun/0_lora" and back.sweep_dir == "./multirun"
    assert back.config["paths"]["data_dir"] == "~/.cache/peftbench"
    assert back.config["paths"]["elsewhere"] == "/srv/data/x.csv"  # under no anchor: as given
    assert back.config["task"]["source"]["data_files"] == "<peftbench>/tasks/fixtures/mr/corpus.csv"
    assert back.error == "FileNotFoundError: ~/.cache/peftbench/x.csv"
    assert locate(back.output_dir).resolve() == project / "multirun" / "0_lora"
    assert locate(back.config["task"]["source"]["data_files"]) == fixture
    assert locate(back.config["paths"]["data_dir"]) == home / ".cache" / "peftbench"
    assert results_module.config_fingerprint(back, []) == results_module.config_fingerprint(result, [])


def test_portable_leaves_look_alike_folders_alone(tmp_path: Path) -> None:
    anchors = [(str(tmp_path / "proj"), ".")]
    assert portable(f"{tmp_path}/project/x", anchors) == f"{tmp_path}/project/x"
    assert portable(f"{tmp_path}/proj", anchors) == "."
    assert portable(f"see {tmp_path}/proj/a.csv: bad", anchors) == "see ./a.csv: bad"


def test_no_committed_result_holds_a_machine_local_path() -> None:
    root = Path(__file__).resolve().parents[1] / "results"
    offenders = []
    for path in root.rglob("*.json"):
        text = path.read_text()
        for marker in ('"/root', '"/home/', '"/work/', '"/tmp/', '"/Users/'):
            if marker in text or marker.replace('"', " ") in text:
                offenders.append(f"{path.relative_to(root)}: {marker}")
    assert not offenders, offenders[:5]


def test_export_rebuilds_from_portable_paths(tmp_path: Path) -> None:
    """A stored config's ``~`` and ``<peftbench>`` paths open again on this machine."""
    config = {"task": {"source": {"data_files": "<peftbench>/tasks/fixtures/x.csv"}}, "p": ["~/a", "./b", 1]}
    local = results_module.localize(config)
    assert local["task"]["source"]["data_files"] == str(PACKAGE_DIR / "tasks" / "fixtures" / "x.csv")
    assert local["p"] == [str(Path.home() / "a"), "./b", 1]


def test_peftbench_results_portable_rewrites_old_files_keeping_ids_and_fingerprints(
    tmp_path: Path, capsys
) -> None:
    """Files written before portable paths (absolute paths of another machine) are rewritten in place."""
    old_project, old_home = Path("/builds/ci/project"), Path("/home/ci")
    folder = tmp_path / "runs"
    folder.mkdir()
    result = run_result(
        "lora",
        1,
        0.8,
        output_dir=f"{old_project}/multirun/0_lora",
        config={
            "task": {
                "headline": "accuracy",
                "fixture": f"{old_project}/peftbench/tasks/fixtures/mr/corpus.csv",
            },
            "paths": {
                "data_dir": f"{old_home}/.cache/peftbench",
                "output_dir": f"{old_project}/multirun/0_lora",
            },
            "data_files": f"{old_home}/.cache/peftbench/corpora/mr.csv",
        },
    )
    data = json.loads(json.dumps(result.to_dict()))
    data["schema_version"] = 2  # fingerprint recomputed from the stored config: it must not move
    data.pop("fingerprint")
    data.pop("predictions")
    data.pop("curve")
    path = folder / result.filename
    path.write_text(json.dumps(data, indent=2))
    before = read_result(path)
    args = ["portable", str(folder), "--project", str(old_project), "--home", str(old_home)]
    assert results_cli.main(args) == 0
    assert "rewrote 1 result file(s); 0 already portable" in capsys.readouterr().out
    after = read_result(path)
    assert "/builds/" not in path.read_text() and "/home/ci" not in path.read_text()
    assert after.output_dir == "./multirun/0_lora"
    assert after.config["task"]["fixture"] == "<peftbench>/tasks/fixtures/mr/corpus.csv"
    assert after.config["data_files"] == "~/.cache/peftbench/corpora/mr.csv"
    assert after.run_id == before.run_id and after.test == before.test
    assert results_module.config_fingerprint(after) == results_module.config_fingerprint(before)
    assert results_cli.main(args) == 0  # idempotent
    assert "rewrote 0 result file(s); 1 already portable" in capsys.readouterr().out
