"""The task head: one learning rate of its own when a study asks for it, and the sentence representation it
reads declared by the model config (``model.pooling``).

A method's lr must not silently set the head's once ``optimizer.head_lr`` is given (prompt tuning's 0.3, full
fine-tuning's 2e-5); with ``model.pooling=mean`` the head reads the masked mean of the last hidden states (what
a sentence-transformer checkpoint such as MiniLM was trained to produce), with ``cls`` the [CLS] state itself,
and ``native`` keeps what transformers builds (BERT: the pretrained pooler on [CLS]).
"""

from __future__ import annotations

import pytest
import torch

from peftbench.assemble import assemble as prepare
from peftbench.errors import ConfigError
from peftbench.methods._common import in_modules
from peftbench.results import compute_run_id

SMOKE = ("debug=fast_dev_run",)


def _initial_lrs(prepared) -> dict[str, float]:
    names = {id(p): n for n, p in prepared.module.model.named_parameters()}
    return {
        names[id(p)]: group["initial_lr"]
        for group in prepared.trainer.optimizers[0].param_groups
        for p in group["params"]
    }


def _fit(prepared):
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    return prepared


@pytest.mark.parametrize(
    ("method", "body_lr"),
    [("lora", 1e-3), ("full", 1e-3), ("prompt_tuning", 1e-3), ("loraplus", None), ("lorafa", 1e-3)],
)
def test_head_lr_sets_the_head_and_only_the_head(method: str, body_lr: float | None, make_cfg) -> None:
    prepared = _fit(
        prepare(make_cfg(f"method={method}", "optimizer.lr=1e-3", "optimizer.head_lr=0.05", *SMOKE))
    )
    lrs = _initial_lrs(prepared)
    head = {n: lr for n, lr in lrs.items() if in_modules(n, ["classifier"])}
    body = {n: lr for n, lr in lrs.items() if n not in head}
    assert head and all(lr == pytest.approx(0.05) for lr in head.values())
    assert body  # every method trains something besides the head
    if body_lr is None:  # LoRA+: A factors at lr, B factors at lr x ratio, none at the head's
        assert {round(lr, 12) for lr in body.values()} == {1e-3, round(1e-3 * 16, 12)}
    else:
        assert all(lr == pytest.approx(body_lr) for lr in body.values())


def test_without_head_lr_the_head_follows_the_method_lr(make_cfg) -> None:
    lrs = _initial_lrs(_fit(prepare(make_cfg("method=lora", "optimizer.lr=1e-3", *SMOKE))))
    assert all(lr == pytest.approx(1e-3) for lr in lrs.values())


def test_head_lr_leaves_the_run_id_of_earlier_runs_alone(make_cfg) -> None:
    """null is the behaviour before the knob existed: a resumed study keeps its finished run ids."""
    plain = make_cfg("method=lora")
    explicit = make_cfg("method=lora", "optimizer.head_lr=null", "model.pooling=native")
    assert compute_run_id(plain) == compute_run_id(explicit)
    assert compute_run_id(make_cfg("method=lora", "optimizer.head_lr=0.01")) != compute_run_id(plain)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optimizer.head_lr=0"], "optimizer.head_lr=0: expected a number > 0"),
        (["optimizer.head_lr=fast"], "optimizer.head_lr='fast': expected a float or None"),
        (["model.pooling=max"], "model.pooling=max: allowed native, cls, mean"),
        (["model=tiny-llama", "model.pooling=mean"], "model.pooling=mean: llama's head pools inside itself"),
        (
            [
                "model=tiny-llama",
                "task=gsm8k",
                "task.use_fixture=true",
                "task.max_length=128",
                "optimizer.head_lr=0.01",
            ],
            "optimizer.head_lr=0.01: this task trains no new head",
        ),
    ],
)
def test_bad_head_knobs_stop_before_weights_load(overrides, fragment, make_cfg, monkeypatch) -> None:
    monkeypatch.setattr("peftbench.assemble.load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ConfigError) as error:
        prepare(make_cfg(*overrides, *SMOKE))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def _pooled_and_logits(prepared, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's input (the classifier's argument), the last hidden states and the logits."""
    model = prepared.module.model.eval()
    seen = {}
    classifier = model.get_submodule("classifier")
    handle = classifier.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    handle.remove()
    return seen["x"], out.hidden_states[-1], out.logits


def test_mean_pooling_feeds_the_head_the_masked_mean_and_ignores_padding(make_cfg) -> None:
    prepared = prepare(make_cfg("method=head_only", "model.pooling=mean", *SMOKE))
    batch = next(iter(prepared.datamodule.test_dataloader()))
    mask = batch["attention_mask"]
    assert (mask == 0).any(), "the test needs a padded batch"
    pooled, hidden, logits = _pooled_and_logits(prepared, batch)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    assert torch.allclose(pooled, (hidden * weights).sum(1) / weights.sum(1), atol=1e-6)
    # The shortest row alone, unpadded, gets the same logits: padding does not enter the representation.
    row = int(mask.sum(1).argmin())
    length = int(mask[row].sum())
    alone = {k: v[row : row + 1, :length] for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    _, _, alone_logits = _pooled_and_logits(prepared, alone)
    assert torch.allclose(alone_logits[0], logits[row], atol=1e-5)
    # No pooler layer is left to train or to stay frozen: head-only trains the classifier alone.
    names = [n for n, p in prepared.module.model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("classifier.") for n in names)
    assert not any(".pooler." in n for n, _ in prepared.module.model.named_parameters())


def test_cls_pooling_feeds_the_head_the_first_token_state(make_cfg) -> None:
    prepared = prepare(make_cfg("method=lora", "model.pooling=cls", *SMOKE))
    batch = next(iter(prepared.datamodule.test_dataloader()))
    pooled, hidden, _ = _pooled_and_logits(prepared, batch)
    assert torch.allclose(pooled, hidden[:, 0], atol=1e-6)


def test_native_pooling_is_the_pretrained_pooler(make_cfg) -> None:
    prepared = prepare(make_cfg("method=lora", *SMOKE))
    batch = next(iter(prepared.datamodule.test_dataloader()))
    pooled, hidden, _ = _pooled_and_logits(prepared, batch)
    pooler = prepared.module.model.get_submodule("base_model.model.bert.pooler")
    with torch.no_grad():
        assert torch.allclose(pooled, pooler(hidden), atol=1e-6)


@pytest.mark.parametrize("method", ["prefix_tuning", "prompt_tuning", "lora"])
def test_mean_pooling_trains_under_methods_that_change_the_sequence(method: str, make_cfg) -> None:
    """Prefix tuning lengthens the attention mask beyond the hidden states, prompt tuning lengthens both."""
    prepared = _fit(prepare(make_cfg(f"method={method}", "model.pooling=mean", *SMOKE)))
    assert prepared.trainer.state.finished
