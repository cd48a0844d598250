"""A run is a function of its config and seed: the same seed twice gives the same numbers, predictions and
trained weights, bit for bit; another seed gives other weights (so the comparison can fail at all)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from safetensors.torch import load_file

from peftbench.results import WEIGHTS_FILE, RunResult
from peftbench.train import run

# A few optimizer steps with a checkpoint and a test pass: enough for dropout-free tiny-bert to move its
# LoRA factors and head away from their initialisation, a few seconds each.
OVERRIDES = ("method=lora", "debug=smoke", "optimizer.lr=1e-2", "inference.enabled=false")


def _train(tmp_path: Path, name: str, seed: int) -> tuple[RunResult, dict[str, torch.Tensor]]:
    result = run(compose_config([*OVERRIDES, f"seed={seed}"], tmp_path / name))
    assert result.status == "ok", result.error
    weights = load_file(str(Path(result.output_dir) / WEIGHTS_FILE))
    assert weights, "the run saved no trainable weights"
    return result, weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunResult, dict[str, torch.Tensor]]]:
    tmp_path = tmp_path_factory.mktemp("determinism")
    return {
        "first": _train(tmp_path, "first", seed=7),
        "again": _train(tmp_path, "again", seed=7),
        "other": _train(tmp_path, "other", seed=8),
    }


def test_same_seed_gives_identical_test_metrics(runs) -> None:
    first, again = runs["first"][0], runs["again"][0]
    assert first.test and first.test == again.test
    assert first.test_last == again.test_last
    assert first.run_id == again.run_id  # same config, same id: the second is a rerun, not a new point


def test_same_seed_gives_identical_predictions(runs) -> None:
    first, again = runs["first"][0], runs["again"][0]
    assert first.predictions["test"]["pred"], "no per-example predictions recorded"
    assert first.predictions == again.predictions


def test_same_seed_gives_bit_identical_trained_weights(runs) -> None:
    first, again = runs["first"][1], runs["again"][1]
    assert sorted(first) == sorted(again)
    different = [name for name in first if not torch.equal(first[name], again[name])]
    assert not different, f"same seed, different weights: {different[:5]}"


def test_another_seed_gives_other_weights(runs) -> None:
    first, other = runs["first"][1], runs["other"][1]
    assert sorted(first) == sorted(other)
    assert any(not torch.equal(first[name], other[name]) for name in first), (
        "seed 7 and seed 8 trained the same weights: the seed does not reach the run"
    )
