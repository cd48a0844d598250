"""LoRA initialisations and optimizer-level variants: what each one changes is really changed.

LoRA+ gives the B factors ratio x lr (the head keeps lr); LoRA-FA's A factors never move while B trains; EVA's
and CorDA's data passes really ran (A differs from a plain LoRA init at the same seed, the start still equals
the pretrained model); LoftQ's backbone really is quantised; bad values of the nested init configs stop before
any weights load, and a data-driven init built without data says so in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from peftbench import assemble as assembly
from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.export import rebuild
from peftbench.results import WEIGHTS_FILE, RunResult

SMOKE = ("debug=smoke", "callbacks.model_checkpoint=null")


def _lora_a(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_A." in n}


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_loraplus_gives_b_factors_ratio_times_lr_and_the_head_the_base_lr(make_cfg) -> None:
    prepared = prepare(
        make_cfg("method=loraplus", "optimizer.lr=1e-3", "method.lr_ratio=4", "debug=fast_dev_run")
    )
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    names = {id(p): n for n, p in prepared.module.model.named_parameters()}
    lr_of = {
        names[id(p)]: group["initial_lr"]
        for group in prepared.trainer.optimizers[0].param_groups
        for p in group["params"]
    }
    b_factors = [n for n in lr_of if ".lora_B." in n]
    others = [n for n in lr_of if ".lora_B." not in n]
    assert b_factors and all(lr_of[n] == pytest.approx(4e-3) for n in b_factors)
    assert any("classifier" in n for n in others) and any(".lora_A." in n for n in others)
    assert all(lr_of[n] == pytest.approx(1e-3) for n in others)  # A factors and the whole head keep lr


@pytest.mark.parametrize("correction", ["true", "false"])
def test_lorafa_keeps_a_frozen_while_b_trains(correction: str, make_cfg) -> None:
    prepared = prepare(
        make_cfg("method=lorafa", f"method.gradient_correction={correction}", "optimizer.lr=1e-2", *SMOKE)
    )
    model = prepared.module.model
    a_before = _lora_a(model)
    b_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_B." in n}
    assert a_before and not any(p.requires_grad for n, p in model.named_parameters() if n in a_before)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    after = dict(model.named_parameters())
    assert all(torch.equal(a_before[n], after[n]) for n in a_before)
    assert all(not torch.equal(b_before[n], after[n]) for n in b_before)
    expected = "LoraFAOptimizer" if correction == "true" else "AdamW"
    assert type(prepared.trainer.optimizers[0]).__name__ == expected
    # B (out x r) and the head train: half of LoRA's factor entries (tiny-bert: 2 layers x query, value, 32 x 8).
    assert prepared.method.trainable_parameter_count(model) == 4 * 32 * 8 + 32 * 2 + 2


@pytest.mark.parametrize("name", ["eva", "corda"])
def test_data_driven_inits_ran_and_start_from_the_pretrained_function(name: str, make_cfg) -> None:
    plain = prepare(make_cfg("method=lora", "debug=fast_dev_run"))
    driven = prepare(make_cfg(f"method={name}", "debug=fast_dev_run"))
    plain_a, driven_a = _lora_a(plain.module.model), _lora_a(driven.module.model)
    assert plain_a.keys() == driven_a.keys()
    assert all(not torch.equal(plain_a[n], driven_a[n]) for n in plain_a)
    batch = next(iter(plain.datamodule.test_dataloader()))
    # Both start as the pretrained model (B = 0, or the base weight keeps W - B·A); same seed, same head init.
    assert torch.allclose(_logits(plain.module.model, batch), _logits(driven.module.model, batch), atol=1e-4)
    if name == "eva":  # A's rows are right-singular vectors of the layer inputs: orthonormal
        for a in driven_a.values():
            assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4)


def test_loftq_quantises_the_backbone_and_the_factors_absorb_the_error(make_cfg) -> None:
    pytest.importorskip("bitsandbytes", reason="LoftQ quantises with bitsandbytes")
    plain = prepare(make_cfg("method=lora", "debug=fast_dev_run")).module.model
    loftq = prepare(make_cfg("method=loftq", "debug=fast_dev_run")).module.model
    params = dict(loftq.named_parameters())
    for name, weight in plain.named_parameters():
        if not name.endswith("query.base_layer.weight"):
            continue
        quantised = params[name]
        prefix = name.removesuffix("base_layer.weight")
        a, b = params[f"{prefix}lora_A.default.weight"], params[f"{prefix}lora_B.default.weight"]
        assert not torch.equal(quantised, weight)
        assert quantised.unique().numel() < weight.unique().numel()  # NF4: few levels per block
        error = (weight - quantised).norm()
        assert (weight - quantised - b @ a).norm() < error  # lora_alpha = r: scale 1


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["method=eva", "method.peft_config.eva_config.rho=0.5"],
            "method.peft_config.eva_config.rho=0.5: expected",
        ),
        (
            ["method=eva", "+method.peft_config.eva_config.rank=2"],
            "method.peft_config.eva_config.rank=2: unknown",
        ),
        (["method=loftq", "method.peft_config.loftq_config.loftq_bits=3"], "loftq_bits=3: allowed 4, 8"),
        (
            ["method=corda", "method.peft_config.corda_config.corda_method=xyz"],
            "corda_method='xyz': expected",
        ),
        (
            ["method=corda", "method.calibration_samples=0"],
            "method.calibration_samples=0: expected an integer >= 1",
        ),
        (
            ["method=corda", "method.peft_config.init_lora_weights=pissa"],
            "init_lora_weights=pissa: method.impl",
        ),
        (["method=loraplus", "method.lr_ratio=0.5"], "method.lr_ratio=0.5: expected a number >= 1"),
        (["method=lorafa", "+method.peft_config.use_dora=true"], "method.peft_config.use_dora=True"),
    ],
)
def test_bad_init_and_variant_values_stop_before_loading(overrides, fragment, make_cfg, monkeypatch) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded before the config was checked")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    with pytest.raises(ConfigError) as error:
        prepare(make_cfg(*overrides, "debug=fast_dev_run"))
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_a_data_driven_init_without_batches_says_so(make_cfg) -> None:
    cfg = make_cfg("method=eva", "debug=fast_dev_run")
    run = assembly.parts(cfg)
    spec = assembly.model_spec(run)
    tokenizer = assembly.load_tokenizer(run.model_cfg)
    with pytest.raises(
        ConfigError, match=r"^method\.peft_config\.init_lora_weights=eva: this init needs a pass"
    ):
        assembly.load_transformed(run, spec, tokenizer)


@pytest.mark.parametrize("name", ["corda", "eva"])
def test_rebuild_redoes_the_data_pass(name: str, make_cfg, tmp_path: Path) -> None:
    """Export rebuilds the trained model: CorDA's rewritten base and EVA's ranks come from the same data pass."""
    cfg = make_cfg(f"method={name}", "optimizer.lr=1e-2", *SMOKE)
    prepared = prepare(cfg)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    batch = next(iter(prepared.datamodule.test_dataloader()))
    trained = _logits(prepared.module.model, batch)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    weights = prepared.method.trainable_state_dict(prepared.module.model)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(run_dir / WEIGHTS_FILE))
    result = RunResult(
        run_id="r", task="synthetic", model="tiny-bert", method=name, seed=42, status="ok",
        config=OmegaConf.to_container(cfg, resolve=True), output_dir=str(run_dir),
    )  # fmt: skip
    assert torch.allclose(_logits(rebuild(result).model, batch), trained, atol=1e-5)
