"""Shared test helpers: compose the real configs offline, on tiny models, into a temporary folder."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

import peftbench.config  # noqa: F401  (registers resolvers)
from peftbench.resources import compose, config_dir
from peftbench.results import RunResult

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONF = config_dir()
METHOD_NAMES = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
TASK_NAMES = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
TINY_DEFAULTS = ("model=tiny-bert", "task=synthetic", "logger=none", "trainer.precision=32-true")


def compose_config(
    overrides: Sequence[str] = (), tmp_path: Path | None = None, tiny: bool = True
) -> DictConfig:
    """The config `peftbench-train <overrides>` would run, with outputs under tmp_path."""
    extra = list(TINY_DEFAULTS) if tiny else []
    if tmp_path is not None:
        extra += [f"paths.output_dir={tmp_path}/out", f"paths.results_dir={tmp_path}/results"]
    return compose([*extra, *overrides])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def factory(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_config(overrides, tmp_path, tiny=tiny)

    return factory


def run_result(
    method: str, seed: int, score: float | None, task: str = "synthetic", model: str = "tiny-bert", **fields
) -> RunResult:
    """A finished run as the trainer would record it, built by hand (tests of readers: no training).

    ``score`` is its test accuracy (None: no test metric); ``val`` its best validation accuracy; any other
    RunResult field may be given (status, variant, search, selection, ...).
    """
    val = fields.pop("val", 0.5)
    return RunResult(
        **{
            "run_id": f"{method}{seed}{task}",
            "task": task,
            "model": model,
            "method": method,
            "seed": seed,
            "study": "s",
            "test": {"test/accuracy": score} if score is not None else {},
            "val_best": {"val/accuracy": val},
            "selection": {"monitor": "val/accuracy", "mode": "max", "rule": "best_validation"},
            "efficiency": {
                "trainable_params": 100,
                "trainable_ratio_pct": 1.0 if method != "full" else 100.0,
                "peak_mem_mb": 500.0 + seed,
                "train_samples_per_s": 10.0 * (seed + 1),
                "train_time_s": 3.0,
            },
            "budget": {"max_steps": 40, "batch_size": 16, "steps": 40, "train_flops_est": 1e9},
            "config": {"task": {"headline": "accuracy", "monitor": "val/accuracy"}},
            "ended_at": f"2026-01-{seed:02d}T00:00:00+00:00",
            **fields,
        }
    )


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every attempt to open a connection, recorded (and refused)."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
