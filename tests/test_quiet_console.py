"""A clean console (peftbench/quiet.py): a run prints no warning that is not the user's business, and the
filters are narrow: the same words from another module, other words from the same module, and the user's own
warnings all still get through."""

from __future__ import annotations

import logging
import math
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from peftbench import quiet

# (category, message, module): warnings seen in a default run, each attributed to the module that emits it.
FILTERED = [
    (
        FutureWarning,
        "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` "
        "instead.",
        "transformers.modeling_utils",
    ),
    (
        FutureWarning,
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
        "treespec.is_leaf()` instead.",
        "lightning.pytorch.utilities._pytree",
    ),
]
# What a default run printed before (tests below run a tiny one and look for none of it).
NOISE = (
    "litlogger",
    "is_gradient_checkpointing",
    "LeafSpec",
    "in eval mode at the start of training",
    "LOAD REPORT",
    "Consider training on your downstream task",
    "Generating train split",
    "tokenizing mr",
    "Loading weights",
    "nan samples/s",
)


def _emit(message: str, category: type[Warning], module: str) -> None:
    """A warning as ``module`` raises it (filters match the module a warning is attributed to)."""
    warnings.warn_explicit(
        message, category, f"/site-packages/{module.replace('.', '/')}.py", 1, module=module, registry={}
    )


@contextmanager
def _every_warning() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning recorded, pytest's own filters (``ignore::UserWarning``) and the once-per-place registry
    out of the way: only what peftbench.quiet installs can hide one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextmanager
def _records(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """The records a logger passes on (after its filters), whatever its propagation and level."""
    logger = logging.getLogger(logger_name)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- the warning filters: each hides its own warning and nothing else --------------------------------------
@pytest.mark.parametrize(("category", "message", "module"), FILTERED)
def test_each_filter_hides_its_own_warning_and_nothing_else(
    category: type[Warning], message: str, module: str
) -> None:
    with _every_warning() as caught:
        quiet.install()
        _emit(message, category, module)  # hidden
        _emit(message, category, "my_experiment")  # the same words from the user's code
        _emit("something else is deprecated", category, module)  # other words from the same module
        warnings.warn("the user's business", UserWarning, stacklevel=1)
    shown = [(str(w.message), w.category) for w in caught]
    assert (message, category) in shown  # from my_experiment
    assert ("something else is deprecated", category) in shown
    assert ("the user's business", UserWarning) in shown
    assert len(shown) == 3, shown


def test_every_filter_names_a_message_a_module_and_a_reason_never_a_blanket_ignore() -> None:
    with warnings.catch_warnings():
        before = list(warnings.filters)
        quiet.install()
        added = [entry for entry in warnings.filters if entry not in before]
    assert len(added) == len(quiet.WARNING_FILTERS) >= len(FILTERED)
    for action, message, category, module, _lineno in added:
        assert action == "ignore"
        assert message is not None and message.pattern not in ("", ".*")
        assert module is not None and module.pattern.endswith(r"\Z") and ".*" not in module.pattern
        assert category is not Warning
    for entry in (*quiet.WARNING_FILTERS, *quiet.LOG_FILTERS):
        assert entry.why.strip()


def test_install_twice_adds_each_filter_once() -> None:
    with warnings.catch_warnings():
        quiet.install()
        count = len(warnings.filters)
        quiet.install()
        assert len(warnings.filters) == count
    logger = logging.getLogger(quiet.LOG_FILTERS[0].logger)
    assert sum(isinstance(f, quiet.MessageFilter) for f in logger.filters) == 1


# --- logging: Lightning's adverts go, its information stays --------------------------------------------------
def test_lightnings_litlogger_advert_is_dropped_and_its_other_lines_kept() -> None:
    quiet.install()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with _records(logger.name) as seen:
        logger.info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
            "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics and "
            "artifacts automatically to the Lightning Experiments platform."
        )
        logger.info(
            "💡 Tip: For seamless cloud uploads and versioning, try installing "
            "[litmodels](https://pypi.org/project/litmodels/) to enable LitModelCheckpoint, which syncs "
            "automatically with the Lightning model registry."
        )
        logger.info("GPU available: False, used: False")
        logger.info("💡 Tip: your dataloader could use more workers")  # a tip about this run: kept
    assert [record.getMessage() for record in seen] == [
        "GPU available: False, used: False",
        "💡 Tip: your dataloader could use more workers",
    ]


def test_lightning_lines_print_once_when_the_root_logger_already_prints_them() -> None:
    """Lightning adds its own console handler to the ``lightning`` logger and still propagates to the root,
    where Hydra's handler prints every line again ("INFO: Seed set to 42" twice)."""
    import lightning

    own = lightning._console
    logger = logging.getLogger("lightning")
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    had = own in logger.handlers
    try:
        quiet.install()
        assert own not in logger.handlers
    finally:
        root.removeHandler(console)
        if had and own not in logger.handlers:
            logger.addHandler(own)


# --- the load report: a new task head is expected, anything else is printed ----------------------------------
def _saved_tiny_bert(folder: Path, head: str) -> Path:
    import transformers

    config = transformers.BertConfig(
        vocab_size=256, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model_class = {"none": transformers.BertModel, "mlm": transformers.BertForMaskedLM}[head]
    model_class(config).save_pretrained(folder)
    return folder


def _load(folder: Path) -> list[str]:
    from peftbench.models.backbone import ModelConfig, load_hf_config, load_model

    model_cfg = ModelConfig(name="t", name_or_path=str(folder))
    _, new_weights = load_model(model_cfg, load_hf_config(model_cfg, 2), pad_token_id=0)
    return new_weights


def test_a_new_task_head_loads_without_a_report(tmp_path: Path) -> None:
    folder = _saved_tiny_bert(tmp_path / "bert", "none")
    with _records("transformers.modeling_utils") as seen:
        new_weights = _load(folder)
    assert new_weights == ["classifier.bias", "classifier.weight"]  # still recorded by peftbench
    assert not [r for r in seen if "LOAD REPORT" in r.getMessage()]


def test_unexpected_keys_still_print_the_load_report(tmp_path: Path) -> None:
    folder = _saved_tiny_bert(tmp_path / "mlm", "mlm")  # a masked-LM head the classifier does not have
    with _records("transformers.modeling_utils") as seen:
        _load(folder)
    reports = [r.getMessage() for r in seen if "LOAD REPORT" in r.getMessage()]
    assert len(reports) == 1 and "UNEXPECTED" in reports[0]


# --- progress bars of small data, throughput of short runs ---------------------------------------------------
def test_datasets_bars_are_hidden_for_small_data_only_and_restored() -> None:
    from datasets.utils import are_progress_bars_disabled

    assert not are_progress_bars_disabled()
    with quiet.hidden_datasets_bars(rows=4_000):
        assert are_progress_bars_disabled()
    assert not are_progress_bars_disabled()
    with quiet.hidden_datasets_bars(rows=400_000):  # MNLI-sized: a bar says how long to wait
        assert not are_progress_bars_disabled()


def test_a_run_too_short_to_time_prints_no_nan_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    from peftbench.results import RunResult
    from peftbench.train import print_summary

    result = RunResult(
        run_id="r",
        task="mr",
        model="minilm",
        method="lora",
        seed=0,
        config={"task": {"headline": "accuracy"}},
        test={"test/accuracy": 0.5},
        efficiency={
            "trainable_params": 10,
            "trainable_ratio_pct": 1.0,
            "timed_steps": 0,
            "train_samples_per_s": math.nan,
            "peak_mem_mb": 700.0,
            "train_time_s": 2.0,
        },
    )
    print_summary(result)
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "– samples/s (too few timed steps)" in out


# --- a whole run ------------------------------------------------------------------------------------------------
def test_a_run_prints_none_of_the_noise_and_still_the_users_warnings(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Pretrained weights from a folder (a load report, modules in eval mode), a csv corpus read for the first
    time (datasets' bars), LoRA through peft (the gradient-checkpointing alias), Lightning's fit (its tip)."""
    import datasets

    from peftbench import train

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    folder = _saved_tiny_bert(tmp_path / "bert", "none")
    cfg = make_cfg(
        "method=lora",
        "task=mr",
        "task.use_fixture=true",
        "model.config=null",
        f"model.name_or_path={folder}",
        "debug=smoke",
    )
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = logged.append  # type: ignore[method-assign]
    watched = [logging.getLogger(name) for name in ("lightning", "transformers", "")]
    for logger in watched:
        logger.addHandler(handler)
    try:
        with _every_warning() as caught:
            result = train.run(cfg)
            warnings.warn("the user's business", UserWarning, stacklevel=1)
            _emit("another transformers deprecation", FutureWarning, "transformers.modeling_utils")
    finally:
        for logger in watched:
            logger.removeHandler(handler)
    assert result.status == "ok"
    out, err = capfd.readouterr()
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    text = "\n".join([out, err, *shown, *(record.getMessage() for record in logged)])
    found = [noise for noise in NOISE if re.search(re.escape(noise), text)]
    assert not found, f"{found}\n{text[-4000:]}"
    assert "UserWarning: the user's business" in shown
    assert "FutureWarning: another transformers deprecation" in shown
