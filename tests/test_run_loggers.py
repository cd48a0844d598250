"""Every metric logger carries the run's resolved config, and wandb goes online only where the user can log in.

The config reaches the loggers as flattened dotted keys (``optimizer.lr``, ``method.peft_config.r``), so runs
filter and group by any knob in TensorBoard, the CSV folder and W&B alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peftbench import sweeps
from peftbench.loggers import flat_config
from peftbench.train import run

FAST = ("method=lora", "debug=smoke", "inference.enabled=false", "run_test=false")


def _hparams(folder: Path) -> dict:
    return yaml.safe_load((folder / "hparams.yaml").read_text()) or {}


def test_flat_config_spells_nested_keys_with_dots_and_keeps_lists_whole() -> None:
    nested = {
        "optimizer": {"lr": 1e-3},
        "method": {"peft_config": {"r": 8, "targets": ["q", "v"]}},
        "seed": 1,
    }
    assert flat_config(nested) == {
        "optimizer.lr": 1e-3,
        "method.peft_config.r": 8,
        "method.peft_config.targets": ["q", "v"],
        "seed": 1,
    }


def test_the_csv_logger_writes_the_resolved_config_as_its_hparams(make_cfg) -> None:
    cfg = make_cfg(*FAST, "logger=csv", "optimizer.lr=0.0123", "method.peft_config.r=3")
    assert run(cfg).status == "ok"
    hparams = _hparams(Path(cfg.paths.output_dir, "csv"))
    assert hparams["optimizer.lr"] == 0.0123
    assert hparams["method.peft_config.r"] == 3
    assert hparams["task.max_steps"] == 4  # resolved values, not interpolations
    assert hparams["model.name"] == "tiny-bert"


def test_the_tensorboard_logger_writes_the_resolved_config_as_its_hparams(make_cfg) -> None:
    pytest.importorskip("tensorboard")
    cfg = make_cfg(*FAST, "logger=csv_tensorboard", "optimizer.lr=0.0123", "method.peft_config.r=3")
    assert run(cfg).status == "ok"
    for name in ("csv", "tensorboard"):  # each logger of a combined preset gets the config once
        hparams = _hparams(Path(cfg.paths.output_dir, name))
        assert hparams["optimizer.lr"] == 0.0123, name
        assert hparams["method.peft_config.r"] == 3, name


def test_a_fast_dev_run_writes_no_logger_files(make_cfg) -> None:
    """Lightning swaps the loggers for a stand-in under fast_dev_run: the config follows that choice."""
    cfg = make_cfg("method=lora", "debug=fast_dev_run", "inference.enabled=false", "logger=csv")
    assert run(cfg).status == "ok"
    assert not Path(cfg.paths.output_dir, "csv", "hparams.yaml").exists()


def test_an_offline_wandb_run_has_the_resolved_config(make_cfg, monkeypatch, tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    cfg = make_cfg(*FAST, "logger=wandb", "optimizer.lr=0.0123", "method.peft_config.r=3")
    try:
        assert run(cfg).status == "ok"
        # Lightning leaves the run open: its config is what `wandb sync` uploads.
        config = dict(wandb.run.config)
    finally:
        if wandb.run is not None:
            wandb.run.finish()
    assert config["optimizer.lr"] == 0.0123
    assert config["method.peft_config.r"] == 3
    assert list(Path(cfg.paths.output_dir, "wandb").glob("offline-run-*"))


def test_a_wandb_run_without_credentials_goes_offline_after_the_question(
    make_cfg, bare_home, monkeypatch, tmp_path: Path
) -> None:
    """The real user's path: no WANDB_MODE, no login. Asking wandb for credentials (the logger preset's
    resolver) must not leave wandb's process-wide settings behind: those were read before Lightning set
    the offline mode, and wandb.init then asked for a key it cannot get."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    assert sweeps.wandb_offline() is True  # the question, as the resolver asks it
    cfg = make_cfg(*FAST, "logger=wandb")
    try:
        assert run(cfg).status == "ok"
    finally:
        if wandb.run is not None:
            wandb.run.finish()
    assert list(Path(cfg.paths.output_dir, "wandb").glob("offline-run-*"))


# --- online or offline -----------------------------------------------------------------------------------
KEY = "k" * 40  # the shape of a W&B API key (40 characters); never sent anywhere


@pytest.fixture
def bare_home(monkeypatch, tmp_path: Path) -> Path:
    """A home folder with no wandb credentials, and no W&B variables in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def _login(home: Path) -> None:
    """What `wandb login` leaves behind: the key in ~/.netrc for W&B's host."""
    netrc = home / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)


def test_wandb_is_offline_without_credentials(bare_home, no_network) -> None:
    pytest.importorskip("wandb")
    assert sweeps.wandb_offline() is True
    assert no_network == []


def test_wandb_is_online_after_wandb_login(bare_home, no_network) -> None:
    pytest.importorskip("wandb")
    _login(bare_home)
    assert sweeps.wandb_offline() is False
    assert no_network == []  # asked without verifying the key with the server


def test_wandb_is_online_with_an_api_key_in_the_environment(bare_home, monkeypatch, no_network) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert sweeps.wandb_offline() is False
    assert no_network == []


def test_wandb_mode_online_wins_without_credentials(bare_home, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    assert sweeps.wandb_offline() is False


@pytest.mark.parametrize("mode", ["offline", "dryrun", "disabled", "OFFLINE"])
def test_wandb_mode_offline_wins_over_a_login(bare_home, monkeypatch, mode: str) -> None:
    _login(bare_home)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert sweeps.wandb_offline() is True


# --- presentation is not identity ---------------------------------------------------------------------------
def test_presentation_choices_leave_the_run_id_alone(make_cfg) -> None:
    """A progress bar, its refresh rate or none at all, and the logger, change what the console shows, never
    what the run trains: a sweep resumed under another presentation must find its finished points."""
    from peftbench.results import compute_run_id

    plain = compute_run_id(make_cfg("method=lora"))
    for overrides in (
        ("callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"),
        ("callbacks.progress_bar.refresh_rate=1",),
        (
            "callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
            "~callbacks.progress_bar.refresh_rate",
        ),
        ("logger=csv",),
    ):
        assert compute_run_id(make_cfg("method=lora", *overrides)) == plain, overrides
    assert compute_run_id(make_cfg("method=lora", "optimizer.lr=0.0123")) != plain  # what trains still counts
