"""Hand-written methods (selective, bitfit, sparse, bottleneck adapters), typed knobs and the L2-SP regularizer.

Counts are checked against formulas for tiny-bert (hidden 32, 2 blocks, FFN 64, 2 labels) and
tiny-llama (hidden 32, 2 blocks, no biases); the generic per-method fast_dev_run and
frozen/trainable checks live in test_training.py and cover these methods by glob.
"""

from __future__ import annotations

import dataclasses
import numbers

import pytest
import torch
from conftest import METHOD_NAMES, compose_config
from omegaconf import OmegaConf
from torch import nn

from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.methods.base import METHODS, Method, MethodConfig, ModelContext, knob
from peftbench.methods.bottleneck_adapter import AdaptedOutput
from peftbench.methods.build import build_method, build_regularizers
from peftbench.methods.head_only import set_head_trainable
from peftbench.metrics.efficiency import EfficiencyMonitor
from peftbench.regularizers import REGULARIZERS

HIDDEN, LAYERS, FFN, LABELS = 32, 2, 64, 2
BERT_HEAD = HIDDEN * LABELS + LABELS  # classifier weight + bias
LLAMA_HEAD = HIDDEN * LABELS  # score has no bias


def trainable_names(prepared) -> list[str]:
    return sorted(n for n, p in prepared.module.model.named_parameters() if p.requires_grad)


def count(prepared) -> int:
    return prepared.method.trainable_parameter_count(prepared.module.model)


# --- selective ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "blocks"),
    [
        (("method.last_k=1",), {1}),
        (("method.last_k=null", "method.first_k=1"), {0}),
        (("method.last_k=null", "method.layers=[0,1]"), {0, 1}),
    ],
)
def test_selective_trains_exactly_the_chosen_blocks_and_the_head(overrides, blocks, make_cfg) -> None:
    prepared = prepare(make_cfg("method=selective", *overrides))
    names = trainable_names(prepared)
    body = {n for n in names if not n.startswith("classifier.")}
    assert {int(n.split(".")[3]) for n in body} == blocks
    assert all(n.startswith("bert.encoder.layer.") for n in body)
    assert {"classifier.weight", "classifier.bias"} <= set(names)
    per_block = sum(p.numel() for p in prepared.module.model.bert.encoder.layer[0].parameters())
    assert count(prepared) == len(blocks) * per_block + BERT_HEAD


@pytest.mark.parametrize(
    "overrides",
    [
        ("method.last_k=null", "method.layers=[2]"),
        ("method.last_k=3",),
        ("method.first_k=1",),
        ("method.last_k=0",),
    ],
)
def test_selective_rejects_impossible_choices_before_loading(overrides, make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"method(\.layers=|\.last_k=|\.first_k=|: set exactly one)"):
        prepare(make_cfg("method=selective", *overrides))


def test_selective_on_tiny_llama(make_cfg) -> None:
    prepared = prepare(make_cfg("method=selective", "model=tiny-llama", "method.last_k=1"))
    body = {n for n in trainable_names(prepared) if not n.startswith("score.")}
    assert body and all(n.startswith("model.layers.1.") for n in body)


# --- bitfit ----------------------------------------------------------------------------------------------------
def test_bitfit_trains_biases_and_head_with_analytic_count(make_cfg) -> None:
    prepared = prepare(make_cfg("method=bitfit"))
    names = trainable_names(prepared)
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in names)
    # Per block: q, k, v, attention out, attention LN, FFN in (FFN wide), FFN out, output LN.
    per_block = 3 * HIDDEN + HIDDEN + HIDDEN + FFN + HIDDEN + HIDDEN
    embeddings_ln, pooler = HIDDEN, HIDDEN
    assert count(prepared) == embeddings_ln + LAYERS * per_block + pooler + BERT_HEAD


def test_bitfit_refuses_a_model_without_biases(make_cfg) -> None:
    with pytest.raises(ConfigError, match="no bias parameters"):
        prepare(make_cfg("method=bitfit", "model=tiny-llama"))


# --- sparse ------------------------------------------------------------------------------------------------------
def assert_mask_held(model, masks, before) -> int:
    """Masked entries bit-identical, nearly all free entries moved; returns the number of free entries."""
    changed_free = total_free = 0
    for name, param in model.named_parameters():
        if name not in masks:
            continue
        mask = masks[name].cpu()
        moved = param.detach().cpu() != before[name]
        assert not moved[~mask].any(), f"{name}: masked entries changed"
        changed_free += int(moved[mask].sum())
        total_free += int(mask.sum())
    assert changed_free > 0.9 * total_free  # gradients and/or decoupled decay moved the free entries
    return total_free


def test_sparse_fisher_mask_holds_through_lightning_fit_with_weight_decay(make_cfg) -> None:
    cfg = make_cfg(
        "method=sparse",
        "method.selection=fisher",
        "method.density=0.1",
        "method.fisher_batches=2",
        "optimizer.lr=1e-2",
        "optimizer.weight_decay=0.5",
        "debug=smoke",
        "callbacks.model_checkpoint=null",
        "task.val_every_n_steps=4",
        "trainer.limit_val_batches=1",
    )
    prepared = prepare(cfg)
    model, method = prepared.module.model, prepared.method
    planned = count(prepared)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    assert prepared.trainer.global_step == 4
    masks = method.masks
    assert masks is not None and set(masks) == {n for n, _ in method.masked_parameters(model)}
    total_free = assert_mask_held(model, masks, before)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    assert count(prepared) == planned == total_free + head
    monitor = next(c for c in prepared.trainer.callbacks if isinstance(c, EfficiencyMonitor))
    assert monitor.figures["trainable_params"] == planned  # what the result file reports


@pytest.mark.parametrize(("selection", "scope"), [("magnitude", "global"), ("random", "per_tensor")])
def test_sparse_mask_holds_under_plain_adamw_steps(selection, scope, make_cfg) -> None:
    """The same enforcement (gradient hook + post-step restore) without Lightning: fast, other selections."""
    cfg = make_cfg(
        "method=sparse", f"method.selection={selection}", f"method.scope={scope}", "method.density=0.1"
    )
    prepared = prepare(cfg)
    model, method = prepared.module.model, prepared.method
    planned = count(prepared)
    optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.5), lr=1e-2)
    (callback,) = method.callbacks()
    method.build_masks(method.scores(model))
    callback._enforce(model, [optimizer])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for batch, _ in zip(prepared.datamodule.train_dataloader(), range(3), strict=False):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    callback.on_fit_end(None, None)
    total_free = assert_mask_held(model, method.masks, before)
    assert count(prepared) == planned == total_free + BERT_HEAD


def test_sparse_budget_per_tensor(make_cfg) -> None:
    prepared = prepare(make_cfg("method=sparse", "method.selection=magnitude", "method.density=0.25"))
    model, method = prepared.module.model, prepared.method
    masks = method.build_masks(method.scores(model))
    for name, param in method.masked_parameters(model):
        assert int(masks[name].sum()) == max(1, round(0.25 * param.numel())), name
        # magnitude: every kept entry is at least as large as every dropped one
        kept, dropped = param.detach().abs()[masks[name]], param.detach().abs()[~masks[name]]
        if dropped.numel():
            assert kept.min() >= dropped.max()


@pytest.mark.parametrize(
    ("key", "value"),
    [("density", 0), ("density", 1.5), ("selection", "largest"), ("scope", "layer"), ("fisher_batches", 0)],
)
def test_sparse_rejects_bad_knobs(key, value, make_cfg) -> None:
    with pytest.raises(ConfigError, match=rf"method\.{key}="):
        prepare(make_cfg("method=sparse", f"method.{key}={value}"))


# --- typed knobs: one generic check, one line per bad value ---------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.density=lots", "method.density='lots': expected"),  # wrong type (dataclass_from_cfg)
        ("method.density=1.5", "method.density=1.5: expected a number in (0, 1]"),  # out of range (knob rule)
        ("method.fisher_batches=0", "method.fisher_batches=0: expected an integer >= 1"),
        ("method.scope=layer", "method.scope='layer': expected one of per_tensor, global"),  # a Literal type
        (
            "+method.colour=red",
            "method.colour='red': unknown key; allowed: density, fisher_batches, mask_seed, scope, selection",
        ),
    ],
)
def test_a_bad_custom_knob_is_one_line_before_weights_load(override, message, make_cfg, monkeypatch) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded before the config was checked")

    monkeypatch.setattr("peftbench.assemble.load_model", no_loading)
    with pytest.raises(ConfigError) as error:
        prepare(make_cfg("method=sparse", override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_methods_without_knobs_refuse_any() -> None:
    with pytest.raises(
        ConfigError, match=r"^method\.colour='red': unknown key; method\.impl=full has no knobs$"
    ):
        build_method(compose_config(["method=full", "+method.colour=red"]).method)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_yaml_has_a_meta_block(name: str) -> None:
    """paper, lr and lr_source live in `meta:` (never passed to the implementation); optimizer.lr follows lr."""
    cfg = compose_config([f"method={name}"])
    meta = cfg.method.meta
    assert set(meta) == {"paper", "lr", "lr_source"}
    assert meta.paper and meta.lr_source and isinstance(meta.lr, numbers.Real) and meta.lr > 0
    assert cfg.optimizer.lr == meta.lr
    assert not {"paper", "lr", "lr_source"} & set(cfg.method), "metadata outside the meta block"


def test_every_knob_of_every_implementation_says_what_it_does() -> None:
    for registry in (METHODS, REGULARIZERS):
        for key in registry.names():
            for spec in dataclasses.fields(registry.get(key).Config):
                assert spec.metadata.get("help"), (
                    f"{registry.kind} {key}: knob {spec.name} has no help string"
                )


@dataclasses.dataclass
class LastBlocksConfig(MethodConfig):
    blocks: int = knob(1, help="how many of the last transformer blocks train", ge=1)


class LastBlocks(Method):
    """A method as a newcomer writes one: a Config dataclass and apply(); nothing else in the project changes."""

    Config = LastBlocksConfig
    config: LastBlocksConfig

    def apply(self, model: nn.Module, context: ModelContext) -> nn.Module:
        model.requires_grad_(False)
        for block in model.get_submodule(context.layers_path)[-self.config.blocks :]:
            block.requires_grad_(True)
        set_head_trainable(model, context.head_modules)
        return model


def test_a_custom_method_is_a_module_and_a_yaml(make_cfg, monkeypatch) -> None:
    """Adding a method touches two files: its module (here, this one, registered as `last_blocks`) and its
    YAML (here, the node below); knob checks come from its Config, with no hand-written validation."""
    monkeypatch.setitem(
        METHODS._entries, "last_blocks", LastBlocks
    )  # what @METHODS.register does by file name
    node = {
        "name": "last_blocks",
        "impl": "last_blocks",
        "meta": {"paper": "this test", "lr": 1e-4, "lr_source": "this test"},
        "blocks": 1,
    }
    prepared = prepare(make_cfg("debug=fast_dev_run"), method=build_method(OmegaConf.create(node)))
    body = {n for n in trainable_names(prepared) if not n.startswith("classifier.")}
    assert body and {n.split(".")[3] for n in body} == {"1"}
    with pytest.raises(ConfigError, match=r"^method\.blocks=0: expected an integer >= 1$"):
        build_method(OmegaConf.create({**node, "blocks": 0}))


# --- bottleneck adapters ---------------------------------------------------------------------------------------------
def adapter_size(hidden: int, reduction: int) -> int:
    bottleneck = hidden // reduction
    return 2 * hidden * bottleneck + bottleneck + hidden  # down W, down b, up W (+ up b = hidden)


@pytest.mark.parametrize(
    ("method", "model", "expected"),
    [
        # Houlsby: 2 adapters per block, all layer norms (embeddings + 2 per block, weight + bias), head.
        (
            "houlsby",
            "tiny-bert",
            LAYERS * 2 * adapter_size(HIDDEN, 16) + (2 * LAYERS + 1) * 2 * HIDDEN + BERT_HEAD,
        ),
        ("pfeiffer", "tiny-bert", LAYERS * adapter_size(HIDDEN, 16) + BERT_HEAD),
        # Llama: RMS norms have a weight only; the final norm is not in the layernorm target set.
        ("houlsby", "tiny-llama", LAYERS * 2 * adapter_size(HIDDEN, 16) + 2 * LAYERS * HIDDEN + LLAMA_HEAD),
        ("pfeiffer", "tiny-llama", LAYERS * adapter_size(HIDDEN, 16) + LLAMA_HEAD),
    ],
)
def test_adapters_start_near_identity_and_count_matches_formula(method, model, expected, make_cfg) -> None:
    prepared = prepare(make_cfg(f"method={method}", f"model={model}"))
    net = prepared.module.model.eval()
    wrapped = [m for m in net.modules() if isinstance(m, AdaptedOutput)]
    assert len(wrapped) == LAYERS * (2 if method == "houlsby" else 1)
    assert count(prepared) == expected
    batch = next(iter(prepared.datamodule.train_dataloader()))
    with torch.no_grad():
        adapted = net(**batch).logits
        adapters = [m.adapter for m in wrapped]
        for m in wrapped:
            m.adapter = torch.nn.Identity()
        base = net(**batch).logits
        for m, adapter in zip(wrapped, adapters, strict=True):
            m.adapter = adapter
    assert not torch.equal(adapted, base)  # the adapters are in the forward path...
    torch.testing.assert_close(adapted, base, atol=5e-3, rtol=5e-3)  # ...and start near the identity


def test_adapters_refuse_models_without_adapter_points(make_cfg) -> None:
    with pytest.raises(ConfigError, match="adapter_points"):
        prepare(make_cfg("method=houlsby", "~model.adapter_points"))


def test_adapter_reduction_factor_must_leave_a_bottleneck(make_cfg) -> None:
    with pytest.raises(ConfigError, match="method.reduction_factor=64"):
        prepare(make_cfg("method=pfeiffer", "method.reduction_factor=64"))


# --- L2-SP --------------------------------------------------------------------------------------------------
def test_l2sp_is_zero_at_start_and_its_gradient_is_alpha_times_displacement(make_cfg) -> None:
    cfg = make_cfg("method=full", "regularizer=l2sp", "regularizer.alpha=0.3")
    prepared = prepare(cfg)
    model = prepared.module.model
    (l2sp,) = build_regularizers(cfg)
    l2sp.setup(model)
    assert float(l2sp.extra_loss(model)) == 0.0
    anchored = {name for name, _, _ in l2sp.anchored}
    assert anchored and not any(
        n.startswith("classifier.") for n in anchored
    )  # the head is new: never anchored
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    penalty = l2sp.extra_loss(model)
    expected = (
        0.3
        / 2
        * sum(float((p - start[n]).square().sum()) for n, p in model.named_parameters() if n in anchored)
    )
    assert float(penalty) == pytest.approx(expected, rel=1e-5) and float(penalty) > 0
    model.zero_grad()
    penalty.backward()
    for name, param in model.named_parameters():
        if name in anchored:
            torch.testing.assert_close(param.grad, 0.3 * (param.detach() - start[name]))
        else:
            assert param.grad is None


def test_l2sp_trains_through_the_extra_loss_hook_with_selective(make_cfg) -> None:
    cfg = make_cfg("method=selective", "regularizer=l2sp", "debug=fast_dev_run")
    prepared = prepare(cfg)
    (l2sp,) = prepared.module.hooks[1:]
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    assert {n for n, _, _ in l2sp.anchored} == {
        n
        for n, p in prepared.module.model.named_parameters()
        if p.requires_grad and not n.startswith("classifier.")
    }
    assert float(l2sp.extra_loss(prepared.module.model)) > 0  # the chosen block moved away from its start


def test_l2sp_anchors_houlsby_layer_norms_but_not_its_adapters(make_cfg) -> None:
    cfg = make_cfg("method=houlsby", "regularizer=l2sp")
    prepared = prepare(cfg)
    (l2sp,) = build_regularizers(cfg)
    l2sp.setup(prepared.module.model)
    anchored = {n for n, _, _ in l2sp.anchored}
    assert anchored and all("LayerNorm" in n for n in anchored)


def test_l2sp_refuses_lora_whose_trainable_weights_are_all_new(make_cfg) -> None:
    """LoRA at bias=none trains only what peft injected (flagged by the bridge): nothing to anchor."""
    cfg = make_cfg("method=lora", "regularizer=l2sp")
    prepared = prepare(cfg)
    (l2sp,) = build_regularizers(cfg)
    with pytest.raises(ConfigError, match="regularizer=l2sp"):
        l2sp.setup(prepared.module.model)


def test_l2sp_anchors_the_pretrained_biases_lora_trains_at_bias_all(make_cfg) -> None:
    """The regularizer asks the model which weights are new, not whether it is a PeftModel: with bias=all
    LoRA trains the backbone's pretrained biases, and exactly those are anchored (LoRA factors and the head's
    trained copy are new)."""
    cfg = make_cfg("method=lora", "method.peft_config.bias=all", "regularizer=l2sp")
    prepared = prepare(cfg)
    model = prepared.module.model
    (l2sp,) = build_regularizers(cfg)
    l2sp.setup(model)
    anchored = {n for n, _, _ in l2sp.anchored}
    biases = {n for n, p in model.named_parameters() if p.requires_grad and n.endswith(".bias")}
    assert anchored == {n for n in biases if "classifier" not in n and "lora_" not in n}
    assert anchored and all(n.endswith(".bias") for n in anchored)
    assert {n for n, _ in l2sp.new} >= {n for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("regularizer.alpha=-1", "regularizer.alpha=-1: expected a number >= 0"),
        ("regularizer.alpha=strong", "regularizer.alpha='strong': expected"),
        ("+regularizer.gamma=1", "regularizer.gamma=1: unknown key; allowed: alpha, beta, head_modules"),
        ("regularizer.impl=l3sp", "regularizer.impl=l3sp: unknown regularizer 'l3sp'; known: l2sp"),
    ],
)
def test_l2sp_rejects_bad_knobs(override: str, message: str, make_cfg) -> None:
    with pytest.raises(ConfigError) as error:
        build_regularizers(make_cfg("regularizer=l2sp", override))
    assert str(error.value).startswith(message)


def test_regularizer_none_builds_nothing(make_cfg) -> None:
    assert build_regularizers(make_cfg("regularizer=none")) == []


def test_configs_stored_before_the_meta_block_still_build(make_cfg) -> None:
    """Result files written before this layout keep lr/paper/lr_source at the top of `method:` and name the
    regularizer by `_target_`; export rebuilds such runs, so both still build."""
    method = build_method(
        OmegaConf.create({"name": "full", "impl": "full", "paper": "p", "lr": 2e-5, "lr_source": "s"})
    )
    assert method.name == "full"
    cfg = make_cfg("regularizer=l2sp")
    cfg.regularizer = {"name": "l2sp", "_target_": "peftbench.regularizers.l2sp.L2SP", "alpha": 0.1}
    (l2sp,) = build_regularizers(cfg)
    assert l2sp.config.alpha == 0.1
    cfg.regularizer = {"name": "none", "_target_": None}
    assert build_regularizers(cfg) == []
