"""Data that cannot train a run stops with one line naming the file or the key, before the model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.assemble import assemble
from peftbench.errors import ConfigError


def _no_model_load(*args, **kwargs):
    raise AssertionError("the model loaded before the bad data was reported")


def _rows(n: int = 30, label=lambda i: ("negative", "positive")[i % 2]) -> list[str]:
    return ["text,label"] + [f"sentence number {i},{label(i)}" for i in range(n)]


NAMED = ("task.label_names=[negative,positive]",)
CASES = {
    # a CSV whose rows are all one class was recorded `ok` with accuracy 1.0 (named or inferred classes)
    "one class": (_rows(label=lambda i: "positive"), "the train split holds only class ['positive']", NAMED),
    "one class, inferred": (
        _rows(label=lambda i: "positive"),
        "the train split holds only class ['positive']",
        (),
    ),
    "header only": (["text,label"], "has no rows (empty or header-only file)", NAMED),
    # the header is line 1: the ragged row after it and 10 rows is line 12
    "ragged": (
        [*_rows(10), "one,two,three,four", *_rows(10)[1:]],
        "line 12 has 4 fields, the header 2",
        NAMED,
    ),
    # a row with fewer fields than the header: the csv builder fills the label with null ("value None")
    "short row": (
        [*_rows(10), "a row without its label", *_rows(10)[1:]],
        "line 12 has 1 field(s), the header 2",
        NAMED,
    ),
    "empty label": (
        [*_rows(10), "a row with an empty label,", *_rows(10)[1:]],
        "has no label (an empty field",
        NAMED,
    ),
    "label outside the names": (
        [*_rows(20), "extra row,neutral"],
        "value 'neutral' in split 'train' is not a label",
        NAMED,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_fails_with_one_line_before_the_model_loads(
    case: str, make_cfg, monkeypatch, tmp_path
) -> None:
    lines, fragment, overrides = CASES[case]
    data = tmp_path / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    with pytest.raises(ConfigError) as raised:
        assemble(make_cfg("task=csv", f"task.path={data}", *overrides))
    text = str(raised.value)
    assert fragment in text and "\n" not in text, text


def test_an_unreadable_file_names_itself(make_cfg, monkeypatch, tmp_path: Path) -> None:
    data = tmp_path / "latin1.csv"
    data.write_bytes(b"text,label\n" + "caf\xe9 cr\xe8me,positive\n".encode("latin-1") * 20)
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    with pytest.raises(ConfigError) as raised:
        assemble(make_cfg("task=csv", f"task.path={data}"))
    assert str(raised.value).startswith(f"task.path={data}: line 2 is not UTF-8 (byte 0xe9 at column 4)")
    assert "\n" not in str(raised.value)


def _refusal(make_cfg, monkeypatch, *overrides: str) -> str:
    monkeypatch.setattr("peftbench.assemble.load_model", _no_model_load)
    with pytest.raises(ConfigError) as raised:
        assemble(make_cfg("task=csv", *overrides, *NAMED))
    text = str(raised.value)
    assert "\n" not in text, "one line"
    return text


def test_a_non_utf8_row_names_the_file_and_its_line(make_cfg, monkeypatch, tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    good = "\n".join(_rows(25)) + "\n"  # lines 1-26
    data.write_bytes(good.encode() + "caf\xe9 cr\xe8me,positive\n".encode("latin-1") + b"last row,negative\n")
    text = _refusal(make_cfg, monkeypatch, f"task.path={data}")
    assert text.startswith(f"task.path={data}: line 27 is not UTF-8 (byte 0xe9 at column 4)"), text


def test_a_ragged_row_names_the_file_and_its_line_past_quoted_newlines(
    make_cfg, monkeypatch, tmp_path
) -> None:
    # a quoted field spanning two lines is one row: the line numbers are the file's, as an editor shows them
    lines = [*_rows(5), '"a sentence\nover two lines",positive', *_rows(5)[1:], "a,b,c", *_rows(20)[1:]]
    data = tmp_path / "quoted.csv"
    data.write_text("\n".join(lines) + "\n")
    text = _refusal(make_cfg, monkeypatch, f"task.path={data}")
    assert text.startswith(f"task.path={data}: line 14 has 3 fields, the header 2"), text


def test_a_ragged_tsv_row_counts_tab_separated_fields(make_cfg, monkeypatch, tmp_path: Path) -> None:
    data = tmp_path / "data.tsv"
    rows = [row.replace(",", "\t") for row in _rows(20)]
    data.write_text("\n".join([*rows[:8], "x\ty\tz", *rows[8:]]) + "\n")
    text = _refusal(make_cfg, monkeypatch, f"task.path={data}")
    assert text.startswith(f"task.path={data}: line 9 has 3 fields, the header 2"), text


def test_a_missing_file_is_named(make_cfg, monkeypatch, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.csv"
    text = _refusal(make_cfg, monkeypatch, f"task.path={missing}")
    assert text == f"task.path={missing}: file does not exist", text


def test_a_folder_given_as_the_data_file_is_named(make_cfg, monkeypatch, tmp_path: Path) -> None:
    folder = tmp_path / "data.csv"  # a folder with a data file's suffix
    folder.mkdir()
    text = _refusal(make_cfg, monkeypatch, f"task.path={folder}")
    assert text.startswith(f"task.path={folder}: a folder, not a file"), text


@pytest.mark.parametrize(
    ("labels", "names", "label_map"),
    [
        (["good", "bad", "ok"], ["bad", "good", "ok"], None),  # strings: sorted
        (["10", "2", "1"], ["1", "2", "10"], None),  # numeric strings sort numerically (read as ints)
        (["-1", "1"], ["-1", "1"], {-1: 0, 1: 1}),
    ],
)
def test_your_own_csv_needs_no_label_names(labels, names, label_map, make_cfg, tmp_path: Path) -> None:
    data = tmp_path / "mine.csv"
    data.write_text(
        "\n".join(["text,label"] + [f"row {i},{labels[i % len(labels)]}" for i in range(30)]) + "\n"
    )
    cfg = make_cfg("task=csv", f"task.path={data}", "debug=fast_dev_run")
    from peftbench.train import run

    result = run(cfg)
    assert result.status == "ok"
    assert result.config["task"]["label_names"] == names  # recorded with the result
    if label_map is not None:
        assert {int(k): v for k, v in result.config["task"]["label_map"].items()} == label_map


@pytest.mark.parametrize(
    ("suffix", "labels", "names"),
    [
        ("csv", ["1", "neg"], ["1", "neg"]),  # a name that reads like a class index is still that name
        ("csv", ["10", "2", "1"], ["1", "2", "10"]),  # read as numbers by the csv reader
        (
            "jsonl",
            ["10", "2", "1"],
            ["1", "2", "10"],
        ),  # kept as strings by the json reader: still numeric order
        ("jsonl", [3, 1, 2], ["1", "2", "3"]),  # numbers that are not indices 0..n-1
    ],
)
def test_inferred_classes_map_every_row_to_its_own_label(suffix, labels, names, make_cfg, tmp_path) -> None:
    import json

    from peftbench.assemble import parts
    from peftbench.tasks.sources import load_source, prepare_splits

    rows = [(f"row {i}", labels[i % len(labels)]) for i in range(30)]
    data = tmp_path / f"mine.{suffix}"
    if suffix == "csv":
        data.write_text("\n".join(["text,label"] + [f"{text},{label}" for text, label in rows]) + "\n")
    else:
        data.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    task = parts(make_cfg("task=csv", f"task.path={data}")).task
    assert task.label_names == names
    raw = dict(rows)
    for split in prepare_splits(task, load_source(task)).values():
        for row in split:
            assert task.label_names[row["label"]] == str(raw[row["text"]]), row


def test_inferred_classes_are_logged_once(make_cfg, tmp_path: Path, caplog) -> None:
    import logging

    from peftbench.train import run

    data = tmp_path / "mine.csv"
    data.write_text("\n".join(["text,label"] + [f"row {i},{('b', 'a')[i % 2]}" for i in range(30)]) + "\n")
    with caplog.at_level(logging.INFO, logger="peftbench"):
        assert run(make_cfg("task=csv", f"task.path={data}", "debug=fast_dev_run")).status == "ok"
    said = [r.getMessage() for r in caplog.records if "classes read from the train split" in r.getMessage()]
    assert said == ["task csv: classes read from the train split: ['a', 'b']"], said


def test_a_path_keeps_the_sources_builder_options(make_cfg, monkeypatch, tmp_path: Path) -> None:
    """``task.path`` replaced the whole source, so ``task.source.encoding=latin-1`` was silently dropped."""
    data = tmp_path / "latin1.csv"
    data.write_bytes(
        b"text,label\n"
        + "".join(f"caf\xe9 {i},{('negative', 'positive')[i % 2]}\n" for i in range(40)).encode("latin-1")
    )
    cfg = make_cfg("task=csv", f"task.path={data}", "+task.source.encoding=latin-1", *NAMED)
    from peftbench.tasks.config import TaskConfig

    assert TaskConfig.from_cfg(cfg.task).source == {
        "encoding": "latin-1",
        "kind": "csv",
        "data_files": str(data),
    }
