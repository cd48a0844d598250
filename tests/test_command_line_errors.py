"""What ``peftbench-train`` prints and returns for a command line that Hydra itself refuses, or that names a
value only a class's signature can judge: one ``peftbench-train: <key>=<value>: <allowed>`` line, exit 2.

Hydra used to print its own multi-line message (an option list and the config search path, or a trimmed stack
trace) and exit 1. These run ``train.main()`` in this process with a patched ``sys.argv`` (no model is built:
every case fails while composing or checking), so they are quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import TINY_DEFAULTS

from peftbench import train
from peftbench.errors import ConfigError
from peftbench.train import run

HYDRA_CASES = [
    # (overrides, the start of the line after "peftbench-train: ")
    (["model=no-such-model"], "model=no-such-model: no such model config; allowed: bert-base-uncased, "),
    (["method=no_such_method"], "method=no_such_method: no such method config; allowed: adalora, "),
    (
        ["experiments=no_such/study"],
        "experiments=no_such/study: no such experiments config; allowed: compare/",
    ),
    (["no_such_knob=1"], "no_such_knob=1: unknown key; allowed: callbacks, hydra, "),
    (["model.no_such_knob=1"], "model.no_such_knob=1: unknown key; allowed: adapter_points, "),
    (["+model.name=x"], "model.name=x: already set; drop the + (model.name=x) or write ++model.name=x"),
    (["task.name='abc"], "task.name='abc: not a valid override"),
    (["-m", "method=lora,ia3", "--cfg", "job"], "-m and --cfg together: --cfg prints one job's config"),
    (["--info", "-m"], "--info and -m together: Hydra runs one mode at a time"),
]


def _main(argv: list[str], monkeypatch, tmp_path: Path) -> int:
    monkeypatch.delenv("PEFTBENCH_TRACEBACK", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv(train._USER_HYDRA_FULL_ERROR, raising=False)  # main() sets these; monkeypatch restores
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.chdir(tmp_path)
    base = [*TINY_DEFAULTS, f"paths.results_dir={tmp_path}/results", f"hydra.run.dir={tmp_path}/run"]
    monkeypatch.setattr(sys, "argv", ["peftbench-train", *base, *argv])
    with pytest.raises(SystemExit) as stop:
        train.main()
    return stop.value.code


@pytest.mark.parametrize(("overrides", "start"), HYDRA_CASES, ids=[" ".join(o) for o, _ in HYDRA_CASES])
def test_a_command_line_hydra_refuses_is_one_line_and_exit_2(
    overrides, start, monkeypatch, tmp_path, capsys
) -> None:
    code = _main(overrides, monkeypatch, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-2000:]
    assert lines[-1].startswith(f"peftbench-train: {start}"), lines[-1]
    assert sum(line.startswith("peftbench-train:") for line in lines) == 1
    assert not list(tmp_path.glob("**/*.json")), "a config error is not a run"


def test_a_run_folder_under_a_file_is_one_line(monkeypatch, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    code = _main([f"hydra.run.dir={tmp_path}/afile/run"], monkeypatch, tmp_path)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith(
        f"peftbench-train: hydra.run.dir={tmp_path}/afile/run: cannot create the run folder"
    )


def test_the_switch_still_shows_hydras_traceback(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PEFTBENCH_TRACEBACK", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["peftbench-train", *TINY_DEFAULTS, "model=no-such-model"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.delenv(train._USER_HYDRA_FULL_ERROR, raising=False)
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        train.main()


# Values only the receiving class's signature (or its constructor) can judge; each one ran to `ok`, named no
# key, or printed a traceback before. Checked before any weights load, like test_early_checks.CASES.
SIGNATURE_CASES = [
    (
        ["trainer.deterministic=maybe"],
        "trainer.deterministic='maybe': expected a bool, warn or None",
    ),
    (["trainer.precision=17-mixed"], "trainer.precision='17-mixed': allowed 64, 32, 16, transformer-engine"),
    (["+trainer.benchmark=maybe"], "trainer.benchmark='maybe': expected a bool or None"),
    (["+trainer.no_such_knob=1"], "trainer.no_such_knob=1: not an argument of lightning.pytorch.Trainer"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: expected a list of 2 values (float, float)"),
    (["optimizer.betas=[1.5,0.9]"], "optimizer.betas=[1.5, 0.9]: Invalid beta parameter at index 0: 1.5"),
    (["+optimizer.amsgrad=maybe"], "optimizer.amsgrad='maybe': expected a bool"),
    (  # Lightning refused this at the first step: a fused step unscales gradients itself
        ["+optimizer.fused=true", "trainer.precision=bf16-mixed"],
        "optimizer.fused=True: this optimizer unscales gradients in its own step",
    ),
    (
        ["callbacks.progress_bar.refresh_rate=-1"],
        "callbacks.progress_bar.refresh_rate=-1: expected a number >= 0",
    ),
    (
        ["+callbacks.model_checkpoint.no_such_knob=1"],  # SelectedCheckpoint's **kwargs reach ModelCheckpoint
        "callbacks.model_checkpoint.no_such_knob=1: not an argument of peftbench.metrics.selection.Selected",
    ),
    (
        ["callbacks.model_checkpoint.monitor=val/no_such_metric"],
        "callbacks.model_checkpoint.monitor=val/no_such_metric: not a metric this run logs; allowed val/loss",
    ),
    (
        ["logger=csv", "+logger.csv.flush_logs_every_n_steps=0"],
        "logger.csv.flush_logs_every_n_steps=0: expected",
    ),
    (["sweep.resume=maybe"], "sweep.resume='maybe': expected a bool"),
    (["+scheduler.no_such_knob=1"], "scheduler.no_such_knob=1: unknown key; allowed: name, warmup_ratio"),
    (["+inference.no_such_knob=1"], "inference.no_such_knob=1: unknown key; allowed: enabled, max_batches"),
    (["inference=null"], "inference=None: expected a block with the keys enabled, max_batches"),
    (["study=[a,b]"], "study=['a', 'b']: expected a str or None"),
    (["paths.results_dir=''"], "paths.results_dir='': expected a folder path"),
    (["model.max_positions=0"], "model.max_positions=0: expected an integer >= 1"),
    (["+method.peft_config.no_such_knob=3"], "method.peft_config.no_such_knob=3: unknown key; allowed: "),
    (["task.metrics=[no_such_metric]"], "task.metrics=['no_such_metric']: unknown metric no_such_metric"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), SIGNATURE_CASES, ids=[" ".join(o) for o, _ in SIGNATURE_CASES]
)
def test_a_value_the_signature_refuses_stops_before_any_weights_load(
    overrides, message, make_cfg, monkeypatch, tmp_path
) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the tokenizer or the weights were loaded before the bad value was refused")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    monkeypatch.setattr("peftbench.assemble.load_tokenizer", no_loading)
    with pytest.raises(ConfigError) as caught:
        run(make_cfg(*overrides))
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    assert not list(Path(tmp_path / "results").glob("*.json"))


def _stops_after_data_before_weights(cfg, monkeypatch) -> str:
    """The check needs the data, the trainer or a weightless skeleton, and still comes before the weights."""

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad value was refused")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    return str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.head_modules=[no_such_head]"],
            "model.head_modules=['no_such_head']: no module no_such_head in",
        ),
        (["trainer.devices=0"], "trainer.devices=0: `Trainer(devices=0)` value is not a valid input"),
        (["trainer.accelerator=magic"], "trainer.accelerator='magic': You selected an invalid accelerator"),
        (
            ["callbacks.model_checkpoint.save_top_k=-5"],
            "callbacks.model_checkpoint.save_top_k=-5: Invalid value",
        ),
        (
            ["callbacks.model_checkpoint.mode=sideways"],
            "callbacks.model_checkpoint.mode='sideways': `mode` can be",
        ),
        (
            ["method.peft_config.target_modules=[no_such_layer]"],
            "method.peft_config.target_modules=['no_such_layer']: ",
        ),
        (
            ["callbacks=forgetting", "callbacks.forgetting.texts=nope"],  # its own prefix, once
            "callbacks.forgetting.texts=nope: allowed task, corpus",
        ),
    ],
)
def test_a_value_checked_on_a_stand_in_names_its_key_before_the_weights(
    overrides, message, make_cfg, monkeypatch
) -> None:
    text = _stops_after_data_before_weights(make_cfg(*overrides), monkeypatch)
    assert text.startswith(message), text


def test_a_local_model_folder_without_config_json_is_refused(make_cfg, tmp_path) -> None:
    empty = tmp_path / "emptymodel"
    empty.mkdir()
    cfg = make_cfg("model.config=null", "model.tokenizer=null", f"model.name_or_path={empty}")
    with pytest.raises(ConfigError, match=r"no config.json in that folder"):
        run(cfg)


def test_a_missing_forgetting_corpus_is_refused_before_loading(make_cfg, monkeypatch, tmp_path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    cfg = make_cfg(
        "callbacks=forgetting", "callbacks.forgetting.texts=corpus", f"paths.data_dir={tmp_path}/nodir"
    )
    text = _stops_after_data_before_weights(cfg, monkeypatch)
    assert text.startswith(f"callbacks.forgetting.corpus.data_files={tmp_path}/nodir/corpora/"), text
    assert "peftbench-assets fetch" in text
    cfg = make_cfg("callbacks=forgetting", f"paths.data_dir={tmp_path}/afile")
    with pytest.raises(ConfigError, match=r"paths.data_dir=.*afile: a file, not a folder"):
        run(cfg)


def test_a_failed_run_prints_its_traceback_once_and_one_line(monkeypatch, tmp_path, capsys) -> None:
    """Hydra used to print the traceback run() had already logged a second time (45-105 lines in all)."""

    def boom(*args, **kwargs):
        raise RuntimeError("boom mid-assembly")

    monkeypatch.setattr("peftbench.train.assemble.assemble", boom)
    code = _main(["method=head_only"], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1
    assert text.count("Traceback (most recent call last)") == 1, text[-3000:]
    last = captured.err.strip().splitlines()[-1]
    assert last == "peftbench-train: run failed: RuntimeError: boom mid-assembly"
    (result,) = (tmp_path / "results").glob("*.json")  # a run that failed is a run: its result says so
    assert '"status": "failed"' in result.read_text()
