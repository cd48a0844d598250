"""One way to build a run (peftbench/assemble.py), and components that report their own result sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from peftbench import assemble
from peftbench.export import export, rebuild
from peftbench.results import RunResult
from peftbench.train import run


class ProbeReporter(L.Callback):
    """A measurement added by YAML alone: it counts training steps and reports them in its own section."""

    def __init__(self, label: str = "probe") -> None:
        self.label = label
        self.steps = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.steps += 1

    def report(self, result: RunResult) -> None:
        result.efficiency[f"{self.label}_steps"] = self.steps


def test_a_new_measurement_is_its_own_callback_and_yaml_entry(make_cfg) -> None:
    result = run(make_cfg("debug=smoke", "+callbacks.probe._target_=test_assembly.ProbeReporter"))
    assert result.efficiency["probe_steps"] == result.budget["steps"] == 4


def test_export_of_a_generation_run_rebuilds_the_causal_lm(make_cfg, tmp_path: Path) -> None:
    # The copy of the assembly in export forgot generative=: a classification head was built and exporting
    # failed ("... has no attribute 'prepare_inputs_for_generation'"). Export now builds through assemble.
    cfg = make_cfg("model=tiny-llama", "task=arith", "method=lora", "debug=smoke", "inference.enabled=false")
    result = run(cfg)
    assert result.status == "ok"
    rebuilt = rebuild(result)
    assert hasattr(rebuilt.model, "prepare_inputs_for_generation")
    merged = export(result, tmp_path / "merged", mode="merged")
    assert (merged / "config.json").is_file()
    adapter = export(result, tmp_path / "adapter", mode="adapter")
    assert (adapter / "adapter_config.json").is_file()


def test_export_rebuilds_the_model_that_was_trained(make_cfg) -> None:
    # No checkpoint: the run saves (and tests) its last weights, which the fit below reproduces.
    cfg = make_cfg(
        "method=lora",
        "debug=smoke",
        "inference.enabled=false",
        "optimizer.lr=1e-2",
        "callbacks.model_checkpoint=null",
    )
    prepared = assemble.assemble(cfg)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    trained = prepared.module.model.eval()
    result = run(cfg)  # the same config and seed: the same weights (runs are deterministic)
    rebuilt = rebuild(result).model
    batch = next(iter(prepared.datamodule.test_dataloader()))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.allclose(trained(**inputs).logits, rebuilt(**inputs).logits, atol=1e-5)


def test_parts_are_built_once_and_checked_before_anything_loads(make_cfg, monkeypatch) -> None:
    built = []
    original = assemble.build_method
    monkeypatch.setattr(assemble, "build_method", lambda node: built.append(1) or original(node))
    import peftbench.models.backbone as backbone

    loads = []
    monkeypatch.setattr(
        assemble, "load_model", lambda *a, **k: loads.append(1) or backbone.load_model(*a, **k)
    )
    assert run(make_cfg("debug=smoke")).status == "ok"
    assert built == [1] and loads == [1]
