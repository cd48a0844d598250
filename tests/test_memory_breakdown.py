"""The memory breakdown (peftbench/metrics/breakdown.py): each part is the size of the tensors it names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peftbench.assemble import assemble as prepare
from peftbench.metrics import breakdown
from peftbench.metrics.efficiency import EfficiencyMonitor


def test_weights_count_tied_storages_once_and_buffers_as_frozen() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.BatchNorm1d(10))
    model[1].weight = model[0].weight  # tied: one storage
    model[2].requires_grad_(False)
    sizes = breakdown.weight_bytes(model)
    assert sizes["trainable_weights"] == 10 * 4 * 4  # the tied matrix once, fp32
    batch_norm = 2 * 10 * 4 + 2 * 10 * 4 + 8  # weight, bias; running mean, var; num_batches_tracked (int64)
    assert sizes["frozen_weights"] == batch_norm


def test_adam_state_is_two_moments_of_the_trainable_weights() -> None:
    model = nn.Linear(16, 8)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 16)).sum().backward()
    assert breakdown.gradient_bytes(model) == (16 * 8 + 8) * 4
    optimizer.step()
    state = breakdown.optimizer_state_bytes([optimizer])
    moments = 2 * (16 * 8 + 8) * 4
    assert moments <= state <= moments + 2 * 8  # plus one scalar `step` tensor per parameter


def test_probe_counts_saved_activations_but_not_parameters() -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    x = torch.randn(5, 32)
    with breakdown.SavedActivationProbe(model) as probe:
        model(x).sum()
    # Saved for backward: the input (for the first weight's gradient) and the ReLU output (read by its own
    # backward and, the same storage counted once, by the second weight's gradient). Weights never count.
    assert probe.bytes == 5 * 32 * 4 + 5 * 64 * 4
    model[0].requires_grad_(False)  # frozen first layer: its input is no longer needed
    with breakdown.SavedActivationProbe(model) as probe:
        model(x).sum()
    assert probe.bytes == 5 * 64 * 4


def test_parts_sum_to_the_peak() -> None:
    weights = {"frozen_weights": 300 * 2**20, "trainable_weights": 2 * 2**20}
    parts = breakdown.breakdown(1000.0, 600.0, weights, 2 * 2**20, 4 * 2**20, 100 * 2**20)
    assert parts["mem_runtime_mb"] == pytest.approx(298.0)
    assert parts["mem_workspace_mb"] == pytest.approx(1000 - 600 - 2 - 4 - 100)
    assert sum(parts.values()) == pytest.approx(1000.0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_reports_its_breakdown(method: str, make_cfg) -> None:
    prepared = prepare(make_cfg(f"method={method}", "task.max_steps=3"))
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    figures = next(c for c in prepared.trainer.callbacks if isinstance(c, EfficiencyMonitor)).figures
    trainable = sum(p.numel() * p.element_size() for p in prepared.module.parameters() if p.requires_grad)
    assert figures["mem_trainable_weights_mb"] * 2**20 == trainable
    assert figures["mem_gradients_mb"] * 2**20 == trainable  # one fp32 gradient per trainable entry
    assert figures["mem_optimizer_state_mb"] * 2**20 >= 2 * trainable  # AdamW's two moments
    module = prepared.module
    frozen = sum(p.numel() * p.element_size() for p in module.parameters() if not p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    assert figures["mem_frozen_weights_mb"] * 2**20 == frozen + buffers
    assert (frozen > 0) is (method == "lora")
    assert figures["mem_activations_saved_mb"] > 0
    parts = sum(figures[f"mem_{part}_mb"] for part in breakdown.PARTS)
    assert parts == pytest.approx(figures["peak_mem_mb"])


def test_the_leaderboard_draws_the_breakdown_only_for_rows_that_have_it(tmp_path) -> None:
    from conftest import run_result

    from peftbench import leaderboard as lb
    from peftbench.plots import memory_plot

    def with_parts(method: str, seed: int):
        result = run_result(method, seed, 0.8)
        result.efficiency.update({f"mem_{part}_mb": 10.0 * seed for part in breakdown.PARTS})
        result.efficiency["peak_mem_kind"] = "cpu_rss"
        return result

    rows = lb.build([with_parts("lora", 1), with_parts("lora", 2), with_parts("full", 1)]).rows
    written = memory_plot(rows, tmp_path)
    assert sorted(p.suffix for p in written) == [".png", ".svg"] and all(p.stat().st_size for p in written)
    # Older result files carry no breakdown: no plot, so their committed leaderboards regenerate unchanged.
    old = lb.build([run_result("lora", 1, 0.8), run_result("full", 1, 0.8)]).rows
    assert memory_plot(old, tmp_path / "old") == []
