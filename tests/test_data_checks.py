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
    "ragged": ([*_rows(10), "one,two,three,four", *_rows(10)[1:]], "cannot be read as csv", NAMED),
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
    assert f"task.path={data}: cannot be read as csv" in str(raised.value)
    assert "\n" not in str(raised.value)


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
