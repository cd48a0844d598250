"""peft tuners from YAML: analytic trainable counts, AdaLoRA's per-step hook, QLoRA on CPU, soft prompts on
encoders and decoders, knob validation before any weight loads (peft's own dataclasses type the knobs),
what peft injects flagged as new weights, inference figures and export round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

from peftbench import export as export_cli
from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.export import rebuild
from peftbench.methods._common import added_parameter_names
from peftbench.methods.build import build_method
from peftbench.methods.peft_tuner import PeftTuner
from peftbench.models.backbone import ModelConfig, load_hf_config, load_model, load_tokenizer
from peftbench.results import WEIGHTS_FILE, RunResult
from peftbench.train import run

HIDDEN, LAYERS, FFN, LABELS = 32, 2, 64, 2  # tiny-bert (conf/model/tiny-bert.yaml)
HEAD = HIDDEN * LABELS + LABELS  # classifier weight + bias, trainable through modules_to_save
QV = LAYERS * 2  # query and value in every layer: square HIDDEN x HIDDEN
LORA = QV * (8 * HIDDEN + HIDDEN * 8)  # r=8: A (r x in) + B (out x r)
EXPECTED = {
    "lora": LORA + HEAD,
    "rslora": LORA + HEAD,  # only the scale differs
    "pissa": LORA + HEAD,  # only the initialisation differs
    "dora": LORA + QV * HIDDEN + HEAD,  # + one magnitude per output feature
    "loha": QV * 2 * (8 * HIDDEN + 8 * HIDDEN) + HEAD,  # two Hadamard factors, each a rank-8 pair
    "vera": QV * (256 + HIDDEN) + HEAD,  # lambda_d (r) + lambda_b (out); shared random A, B frozen
    "ia3": LAYERS * (HIDDEN + HIDDEN + FFN) + HEAD,  # key, value outputs + FFN down-projection input
    "prompt_tuning": 20 * HIDDEN + HEAD,  # 20 virtual token embeddings
    "prefix_tuning": 20 * LAYERS * 2 * HIDDEN + HEAD,  # a key and a value prefix per layer
    "ln_tuning": (1 + 2 * LAYERS) * 2 * HIDDEN + HEAD,  # embeddings + 2 per layer, weight + bias each
}


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_trainable_count_matches_formula(name: str, expected: int, make_cfg) -> None:
    prepared = prepare(make_cfg(f"method={name}", "debug=fast_dev_run"))
    model = prepared.module.model
    assert prepared.method.trainable_parameter_count(model) == expected
    head = [n for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    assert head, "the task head must train (modules_to_save)"


@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning", "p_tuning", "ln_tuning"])
def test_prompt_style_and_norm_methods_on_tiny_llama(name: str, make_cfg) -> None:
    result = run(make_cfg(f"method={name}", "model=tiny-llama", "debug=fast_dev_run"))
    assert result.status == "ok" and result.efficiency["trainable_params"] > 0
    prompt = name != "ln_tuning"
    assert result.efficiency["infer_extra_tokens"] == (20 if prompt else 0)
    assert result.efficiency["infer_mergeable"] == (0.0 if prompt else 1.0)
    assert result.efficiency["infer_unmerged_samples_per_s"] > 0


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_prefix_reaches_attention(model: str, make_cfg) -> None:
    """transformers 5 renamed past_key_values; the prefix must still change what the model computes."""
    prepared = prepare(make_cfg("method=prefix_tuning", f"model={model}", "debug=fast_dev_run"))
    peft_model = prepared.module.model
    batch = next(iter(prepared.datamodule.test_dataloader()))
    with_prefix = _logits(peft_model, batch)
    without = _logits(peft_model.get_base_model(), batch)  # the same frozen model, no prefix
    assert not torch.allclose(with_prefix, without)


def test_adalora_reallocates_every_step_over_the_trainers_budget(make_cfg) -> None:
    cfg = make_cfg("method=adalora", "debug=smoke", "callbacks.model_checkpoint=null", "task.max_steps=6")
    prepared = prepare(cfg)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    allocation = prepared.method.allocation
    tuner = prepared.module.model.base_model
    config = tuner.peft_config["default"]
    assert allocation.calls == prepared.trainer.global_step == 6
    assert config.total_step == 6 and tuner.rankallocator.peft_config.total_step == 6
    assert config.rank_pattern, "the final budget allocation never ran"


def test_qlora_trains_a_4bit_tiny_llama_on_cpu(make_cfg) -> None:
    bnb = pytest.importorskip(
        "bitsandbytes", reason="QLoRA needs the qlora extra (pip install 'peftbench[qlora]')"
    )

    cfg = make_cfg("method=qlora", "model=tiny-llama", "debug=smoke", "callbacks.model_checkpoint=null")
    prepared = prepare(cfg)
    model = prepared.module.model
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized, "no 4-bit linear layer"
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if isinstance(p, bnb.nn.Params4bit)}
    assert packed and all(p.dtype == torch.uint8 for p in packed.values())
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in packed)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    assert isinstance(prepared.trainer.optimizers[0], bnb.optim.PagedAdamW)
    params = dict(model.named_parameters())
    assert all(torch.equal(packed[n], params[n]) for n in packed), "4-bit base weights changed"
    assert any(not torch.equal(lora_before[n], params[n]) for n in lora_before), "LoRA never moved"
    # The total counts quantised weights by their logical shape, not their packed bytes.
    counted = prepared.module.method.trainable_parameter_count(model)
    assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_4bit_layer_trains_after_an_eval_pass() -> None:
    """bitsandbytes repacks 4-bit weights for an inference-only kernel on AVX512-BF16 CPUs at the first
    eval forward; after a validation that saves no checkpoint, training must still backpropagate."""
    bnb = pytest.importorskip(
        "bitsandbytes", reason="QLoRA needs the qlora extra (pip install 'peftbench[qlora]')"
    )

    from peftbench.models.backbone import _guard_cpu_4bit_kernel

    layer = bnb.nn.Linear4bit(128, 64, bias=True, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 128), requires_grad=False, quant_type="nf4")
    layer.bias.requires_grad_(False)
    layer = layer.to("cpu")  # quantises
    _guard_cpu_4bit_kernel(layer)

    def input_grad() -> torch.Tensor:
        x = torch.randn(4, 128, generator=torch.Generator().manual_seed(1), requires_grad=True)
        layer(x).float().sum().backward()
        return x.grad

    before = input_grad()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(4, 128))
    layer.train()
    assert torch.equal(input_grad(), before)


def test_qlora_result_reports_load_and_training_peaks(make_cfg) -> None:
    pytest.importorskip("bitsandbytes", reason="QLoRA needs the qlora extra (pip install 'peftbench[qlora]')")
    result = run(make_cfg("method=qlora", "model=tiny-llama", "debug=fast_dev_run"))
    eff = result.efficiency
    assert result.status == "ok"
    assert eff["peak_mem_load_rss_mb"] > 0 and eff["peak_mem_mb"] > 0
    assert result.config["model"]["quantization"] == "nf4" and result.config["model"]["double_quant"]


def test_qlora_asks_for_4bit_loading_without_writing_model_keys(make_cfg) -> None:
    """qlora's YAML lists the loading option conf/quantization/nf4.yaml instead of setting model.* itself;
    any other method can ask for the same loading, and model.* overrides still win."""
    cfg = make_cfg("method=qlora")
    assert (cfg.model.quantization, cfg.model.double_quant, cfg.model.compute_dtype) == (
        "nf4",
        True,
        "bfloat16",
    )
    assert "model" not in cfg.method and "quantization" not in cfg.method
    assert make_cfg("method=lora", "+quantization=nf4").model.quantization == "nf4"
    assert make_cfg("method=qlora", "model.quantization=fp4").model.quantization == "fp4"
    assert make_cfg("method=lora").model.get("quantization") is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        # One of each kind on the bridge: peft's dataclass types the knobs, the rules peft lacks add ranges.
        (["method.peft_config.r=eight"], "method.peft_config.r='eight': expected"),  # wrong type
        (["method.peft_config.lora_dropout=high"], "method.peft_config.lora_dropout='high': expected"),
        (["method.peft_config.r=0"], "method.peft_config.r=0: expected an integer > 0"),  # out of range
        (["+method.peft_config.rank=4"], "method.peft_config.rank=4: unknown key; allowed: "),  # unknown key
        (["+method.rank=4"], "method.rank=4: unknown key; allowed: optimizer_class, peft_config"),
        (["method.peft_config._target_=torch.nn.Linear"], "_target_=torch.nn.Linear: not a peft config"),
        (["method.peft_config.bias=foo"], "bias='foo'"),
        (
            ["method=vera", "method.peft_config.bias=lora_only"],
            "bias='lora_only': allowed none, all, vera_only",
        ),
        (["method.peft_config.lora_dropout=1.0"], "lora_dropout=1.0"),
        (["method.peft_config.target_modules=[nosuch]"], "target_modules=['nosuch']"),
        (["method=prompt_tuning", "method.peft_config.num_virtual_tokens=100"], "num_virtual_tokens=100"),
        (["method=adalora", "method.tinit_ratio=0.5", "method.tfinal_ratio=0.5"], "tinit_ratio"),
        (["method=qlora", "model.quantization=int3"], "model.quantization=int3"),
        (["method=qlora", "method.optimizer_class=nosuch.Optim"], "method.optimizer_class=nosuch.Optim"),
        # Layer sizes (tiny-bert: query/value 32 -> 32; tiny-llama's v_proj 32 -> 16), on the targeted layers.
        (
            ["method=oft", "method.peft_config.oft_block_size=12"],
            "oft_block_size=12: must divide the in_features",
        ),
        (["method=oft", "method.peft_config.r=-1"], "method.peft_config.r=-1: expected an integer >= 0"),
        (
            ["method=c3a", "method.peft_config.block_size=64"],
            "block_size=64: must divide the in_features and",
        ),
        (
            ["method=vblora", "model=tiny-llama"],
            "vector_length=32: must divide the in_features and out_features",
        ),
        (["method=road", "method.peft_config.group_size=64"], "group_size=64: must divide the out_features"),
        (
            ["method=fourierft", "method.peft_config.n_frequency=2000"],
            "n_frequency=2000: expected at most in x out",
        ),
        (["method=waveft", "model=tiny-llama", "method.peft_config.n_frequency=600"], "n_frequency=600"),
        (["method=shira", "method.peft_config.r=20"], "r=20: expected at most in x out / (in + out)"),
        (["method=miss", "method.peft_config.r=64"], "r=64: expected at most in_features"),
        (
            ["method=miss", "method.peft_config.miss_dropout=1.0"],
            "miss_dropout=1.0: expected a number in [0, 1)",
        ),
        (
            ["method=trainable_tokens", "method.peft_config.token_indices=[]"],
            "token_indices=[]: expected a non-empty",
        ),
        (["method=trainable_tokens", "method.peft_config.token_indices=[2,300]"], "token_indices=[2, 300]"),
    ],
)
def test_bad_knobs_stop_before_weights_load(
    overrides: list[str], fragment: str, make_cfg, monkeypatch
) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded before the config was checked")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    with pytest.raises(ConfigError) as error:
        prepare(make_cfg(*overrides, "debug=fast_dev_run"))
    message = str(error.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("name", ["lora", "pissa"])
def test_export_round_trip(name: str, make_cfg, tmp_path: Path) -> None:
    """Saved trainable weights rebuild the trained logits; the adapter folder applies to the original base
    with plain peft (PiSSA converted to LoRA); the merged folder loads with plain transformers."""
    from peft import PeftModel

    cfg = make_cfg(f"method={name}", "debug=smoke", "callbacks.model_checkpoint=null", "optimizer.lr=1e-2")
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

    adapter = export_cli.export(result, tmp_path / "adapter", "adapter")
    model_cfg = ModelConfig.from_cfg(cfg.model)
    tokenizer = load_tokenizer(model_cfg)
    base, _ = load_model(model_cfg, load_hf_config(model_cfg, LABELS), tokenizer.pad_token_id)
    reloaded = PeftModel.from_pretrained(base, str(adapter))
    assert torch.allclose(_logits(reloaded, batch), trained, atol=1e-4)

    merged = export_cli.export(result, tmp_path / "merged", "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(str(merged))
    assert not any("lora" in n for n, _ in plain.named_parameters())
    assert torch.allclose(_logits(plain, batch), trained, atol=1e-4)


def test_run_reports_inference_figures_and_cli_exports(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg("method=lora", "debug=fast_dev_run"))
    eff = result.efficiency
    assert eff["infer_unmerged_samples_per_s"] > 0 and eff["infer_merged_samples_per_s"] > 0
    assert eff["infer_mergeable"] == 1.0 and eff["infer_extra_tokens"] == 0
    assert eff["infer_merge_max_abs_logit_diff"] < 1e-4
    out = tmp_path / "cli"
    assert export_cli.main([result.provenance["result_path"], "--out", str(out), "--mode", "adapter"]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "peftbench_export.json").is_file()


def test_prompt_methods_cannot_export_merged(make_cfg, tmp_path: Path, capsys) -> None:
    result = run(make_cfg("method=prompt_tuning", "debug=fast_dev_run", "inference.enabled=false"))
    code = export_cli.main(
        [result.provenance["result_path"], "--out", str(tmp_path / "m"), "--mode", "merged"]
    )
    assert code == 2 and "cannot be merged" in capsys.readouterr().err


def test_a_peft_tuner_no_file_mentions_runs_from_its_yaml_node_alone(make_cfg) -> None:
    """Adding a peft tuner is one YAML: FourierFT appears nowhere in peftbench, and its knobs are typed and
    checked by peft's own dataclass (an unknown key lists FourierFT's fields)."""
    node = {
        "name": "fourierft",
        "impl": "peft_tuner",
        "meta": {"paper": "Gao et al. 2024 (arXiv:2405.03003)", "lr": 1e-3, "lr_source": "test"},
        "peft_config": {
            "_target_": "peft.FourierFTConfig",
            "task_type": "SEQ_CLS",
            "n_frequency": 16,
            "target_modules": ["query", "value"],
        },
    }
    method = build_method(OmegaConf.create(node))
    prepared = prepare(make_cfg("debug=fast_dev_run"), method=method)
    trained = {n for n, p in prepared.module.model.named_parameters() if p.requires_grad}
    assert any("fourierft_spectrum" in n for n in trained)
    node["peft_config"]["frequencies"] = 16
    with pytest.raises(
        ConfigError, match=r"method\.peft_config\.frequencies=16: unknown key; allowed: .*n_frequency"
    ):
        build_method(OmegaConf.create(node))


def test_a_peft_config_built_in_python_gets_the_same_rules() -> None:
    from peft import LoraConfig

    with pytest.raises(ConfigError, match=r"method\.peft_config\.r=0: expected an integer > 0"):
        PeftTuner(name="lora", peft_config=LoraConfig(r=0))


def test_boft_butterflies_need_the_cuda_extension(make_cfg, monkeypatch) -> None:
    """Without peft's fbd_cuda extension BOFT quietly drops to one butterfly factor: refused before loading."""
    from peft.tuners.boft.layer import get_fbd_cuda

    if get_fbd_cuda() is not None:
        pytest.skip("peft's fbd_cuda extension builds here: butterfly factors > 1 run")
    monkeypatch.setattr("peftbench.assemble.load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ConfigError, match=r"^method\.peft_config\.boft_n_butterfly_factor=2: > 1 needs"):
        prepare(make_cfg("method=boft", "method.peft_config.boft_n_butterfly_factor=2", "debug=fast_dev_run"))


NEW_TUNERS = [
    "oft",
    "boft",
    "hra",
    "fourierft",
    "miss",
    "c3a",
    "shira",
    "randlora",
    "road",
    "waveft",
    "vblora",
]


@pytest.mark.parametrize(
    "name", ["lora", "ia3", "prompt_tuning", "ln_tuning", "vera", *NEW_TUNERS, "delora", "trainable_tokens"]
)
def test_what_peft_injects_is_flagged_as_new(name: str, make_cfg) -> None:
    """The bridge flags the modules peft created (mark_created), so regularizers ask the model which weights
    are new instead of asking whether it is a PeftModel: every trainable parameter of a tuner at bias=none
    is new, and nothing frozen is flagged."""
    model = prepare(make_cfg(f"method={name}", "debug=fast_dev_run")).module.model
    added = added_parameter_names(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable <= added
    # The weights peft wraps (base layers, the original head beside its trained copy) stay pretrained.
    assert not any("base_layer" in n or "original_module" in n for n in added)
