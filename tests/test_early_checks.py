"""Bad values of every run-level group stop with one line naming the key, before any weights load.

Each case below ran to `status: ok`, or failed mid-training, before these checks (issue: bad input gets one
clear line before anything loads): a test per case, discovered from the table, never a silent run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.errors import ConfigError
from peftbench.train import run

CASES = [
    # (overrides, the start of the one-line error)
    (["seed=1.5"], "seed=1.5: expected an integer"),  # became seed 1 under a new run id
    (["run_test=maybe"], "run_test='maybe': expected a bool"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1: expected a number >= 0"),
    (["optimizer.lr=-1"], "optimizer.lr=-1: expected a number > 0"),
    (["+optimizer.foo=1"], "optimizer.foo: not an argument of torch.optim.AdamW"),
    (["optimizer.betas=[1.5,0.9]"], "optimizer (torch.optim.AdamW): Invalid beta parameter"),
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
