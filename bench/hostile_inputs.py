"""Hostile inputs: ~108 invalid command lines thrown at `peftbench-train`, each classified against the
project's rule for a config error (docs: peftbench/train.py module docstring):

  (a) rejected     non-zero exit (2 is the documented code for a config error)
  (b) one_line     stderr ends with exactly one `peftbench-train: <key>=<value>: <what is allowed>` line
                   that names the key and the bad value
  (c) no_tb        no "Traceback (most recent call last)" in stdout or stderr
  (d) before_load  no transformers model was built or loaded (a sitecustomize hook touches a marker file)
  (e) no_result    no result JSON left in the run's results folder

plus `ran_ok`: a result JSON with "status": "ok" exists (the bad input was silently accepted).

  python bench/hostile_inputs.py --checkout DIR [--out FILE.json] [--only GROUP[,GROUP]] [--limit N] [--case ID]
  python bench/hostile_inputs.py --compare BEFORE.json AFTER.json

Runs `python -m peftbench.train` with cwd=DIR and PYTHONPATH=<hook dir>:DIR, so DIR's code is what runs.
One subprocess at a time; per-case timeout 180 s (--timeout). See bench/hostile_inputs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

BASE = [
    "model=tiny-bert",
    "task=synthetic",
    "logger=none",
    "trainer.precision=32-true",
    "trainer.max_steps=4",
    "task.max_steps=4",
]
TIMEOUT_S = 180
TRACEBACK = "Traceback (most recent call last)"
LINE_RE = re.compile(r"^peftbench-train: (\S+?)=(.*): (.+)$")

# --------------------------------------------------------------------------------------------------
# The hook: sitecustomize.py that touches $HOSTILE_MARKER when transformers builds or loads a model.
# Works on any checkout (it patches transformers, not peftbench), lazily, via a sys.meta_path finder.
# --------------------------------------------------------------------------------------------------
SITECUSTOMIZE = r"""
import os, sys
_MARK = os.environ.get("HOSTILE_MARKER")

def _touch(what):
    # A weightless skeleton (built under `with torch.device("meta")`, the methods' dry runs) loads nothing:
    # recorded with a `meta:` prefix, which criterion (d) does not count.
    try:
        import torch
        if torch.get_default_device().type == "meta":
            what = "meta:" + what
    except Exception:
        pass
    try:
        with open(_MARK, "a") as f:
            f.write(what + "\n")
    except OSError:
        pass

def _patch_modeling_utils(mod):
    cls = getattr(mod, "PreTrainedModel", None)
    if cls is None or getattr(cls, "_hostile_patched", False):
        return
    init = cls.__init__
    def __init__(self, *a, **k):
        _touch("PreTrainedModel.__init__:" + type(self).__name__)
        return init(self, *a, **k)
    cls.__init__ = __init__
    fp = cls.__dict__["from_pretrained"].__func__
    def from_pretrained(klass, *a, **k):
        _touch("from_pretrained:" + klass.__name__)
        return fp(klass, *a, **k)
    cls.from_pretrained = classmethod(from_pretrained)
    cls._hostile_patched = True

def _patch_auto_factory(mod):
    cls = getattr(mod, "_BaseAutoModelClass", None)
    if cls is None or getattr(cls, "_hostile_patched", False):
        return
    for name in ("from_pretrained", "from_config"):
        orig = cls.__dict__[name].__func__
        def wrapper(klass, *a, _orig=orig, _name=name, **k):
            _touch("auto." + _name + ":" + klass.__name__)
            return _orig(klass, *a, **k)
        setattr(cls, name, classmethod(wrapper))
    cls._hostile_patched = True

_TARGETS = {"transformers.modeling_utils": _patch_modeling_utils,
            "transformers.models.auto.auto_factory": _patch_auto_factory}

class _Finder:
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                loader, patch = spec.loader, _TARGETS[fullname]
                class _Loader:
                    def create_module(self, s):
                        return loader.create_module(s)
                    def exec_module(self, module):
                        loader.exec_module(module)
                        try:
                            patch(module)
                        except Exception as e:  # never break the program under test
                            _touch("patch-error:" + repr(e))
                spec.loader = _Loader()
                return spec
        return None

if _MARK:
    sys.meta_path.insert(0, _Finder())
"""

# --------------------------------------------------------------------------------------------------
# Data files for the csv cases (written into the case's folder)
# --------------------------------------------------------------------------------------------------
WORDS = [
    "great film",
    "awful plot",
    "lovely acting",
    "dull script",
    "fine score",
    "bad pacing",
    "superb cast",
]


def _rows(n: int, labels: list[str]) -> list[tuple[str, str]]:
    return [(f"{WORDS[i % len(WORDS)]} number {i}", labels[i % len(labels)]) for i in range(n)]


def _csv(rows: list[tuple[str, str]], header: str = "text,label") -> str:
    return header + "\n" + "".join(f"{t},{lab}\n" for t, lab in rows)


def write_good(d: Path, name: str = "data.csv") -> Path:
    p = d / name
    p.write_text(_csv(_rows(40, ["neg", "pos"])))
    return p


Setup = Callable[[Path], None]


def setup_text(name: str, text: str | bytes) -> Setup:
    def f(d: Path) -> None:
        p = d / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())

    return f


def setup_good(d: Path) -> None:
    write_good(d)


def setup_file(d: Path) -> None:
    (d / "afile").write_text("I am a file, not a folder\n")


def setup_empty_dir(d: Path) -> None:
    (d / "emptymodel").mkdir()
    (d / "adir.csv").mkdir()


def _setup_nonutf8(d: Path) -> None:
    body = _csv(_rows(40, ["neg", "pos"])).encode()
    body = body.replace(b"great film number 7", b"gr\xe9at f\xefilm \xff\xfe number 7")
    (d / "data.csv").write_bytes(body)


def _setup_ragged(d: Path) -> None:
    lines = _csv(_rows(40, ["neg", "pos"])).splitlines()
    lines[12] = lines[12] + ",extra,columns"
    (d / "data.csv").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    group: str
    overrides: list[str]  # {tmp} is the case folder; they replace base overrides with the same key
    keys: tuple[str, ...] = ()  # acceptable keys for (b); default: the key of the last override
    values: tuple[str, ...] = ()  # acceptable value substrings for (b); default: the last override's value
    setup: Setup | None = None
    note: str = ""
    drop: tuple[str, ...] = ()  # base keys to drop


def C(id, group, *overrides, keys=(), values=(), setup=None, note="", drop=()):  # noqa: N802
    return Case(id, group, list(overrides), tuple(keys), tuple(values), setup, note, tuple(drop))


CSV = ["task=csv", "task.path={tmp}/data.csv"]
G1, G2, G3, G4, G5, G6 = "1-run", "2-model", "3-method", "4-task", "5-data", "6-trainer"
G7, G8, G9, G10, G11, G12 = (
    "7-optimizer",
    "8-scheduler",
    "9-callbacks",
    "10-logger",
    "11-inference",
    "12-paths",
)
# Written on 2026-12-03 before that day's fixes and never targeted one by one: inputs of the same kinds as
# groups 1-12 (unknown options, wrong types, ranges, unknown keys) on keys no other case touches, to check
# that the mechanisms are general rather than a list of special cases.
G13 = "13-held-out"

CASES: list[Case] = [
    # 1 run-level
    C("seed_float", G1, "seed=1.5", note="issue: silently accepted"),
    C("seed_text", G1, "seed=abc"),
    C("seed_negative", G1, "seed=-1"),
    C("seed_huge", G1, "seed=99999999999999999999"),
    C("run_test_maybe", G1, "run_test=maybe", note="issue: silently accepted"),
    C("print_summary_2", G1, "print_summary=2"),
    C("study_list", G1, "study=[a,b]"),
    C("init_from_missing", G1, "init_from={tmp}/no_such_run.json"),
    C("unknown_top_key", G1, "no_such_knob=1"),
    C("sweep_resume_maybe", G1, "sweep.resume=maybe"),
    # 2 model
    C("model_unknown", G2, "model=no-such-model"),
    C(
        "model_local_missing",
        G2,
        "model=minilm",
        "model.name_or_path={tmp}/no_such_model_folder",
        note="issue: reported as a bad hub repo id",
    ),
    C(
        "model_local_empty_dir",
        G2,
        "model=minilm",
        "model.name_or_path={tmp}/emptymodel",
        setup=setup_empty_dir,
    ),
    C("model_path_is_file", G2, "model=minilm", "model.name_or_path={tmp}/afile", setup=setup_file),
    C("model_dtype_banana", G2, "model.dtype=banana"),
    C("model_dtype_int8", G2, "model.dtype=int8"),
    C("model_attn_magic", G2, "model.attn_implementation=magic"),
    C("model_gc_maybe", G2, "model.gradient_checkpointing=maybe"),
    C("model_max_positions_0", G2, "model.max_positions=0"),
    C("model_head_missing", G2, "model.head_modules=[no_such_head]"),
    # 3 method
    C("method_unknown", G3, "method=no_such_method"),
    C("lora_r_0", G3, "method.peft_config.r=0"),
    C("lora_r_negative", G3, "method.peft_config.r=-4"),
    C("lora_r_text", G3, "method.peft_config.r=abc"),
    C("lora_alpha_negative", G3, "method.peft_config.lora_alpha=-16", note="issue: silently accepted"),
    C("lora_dropout_1_5", G3, "method.peft_config.lora_dropout=1.5"),
    C("lora_dropout_negative", G3, "method.peft_config.lora_dropout=-0.1"),
    C("lora_targets_missing", G3, "method.peft_config.target_modules=[no_such_layer]"),
    C("lora_bias_sometimes", G3, "method.peft_config.bias=sometimes"),
    C("lora_unknown_knob", G3, "+method.peft_config.no_such_knob=3"),
    C(
        "adalora_target_gt_init",
        G3,
        "method=adalora",
        "method.peft_config.target_r=16",
        keys=("method.peft_config.target_r", "method.peft_config.init_r"),
        values=("16",),
        note="issue: late check",
    ),
    C("prompt_tuning_0_tokens", G3, "method=prompt_tuning", "method.peft_config.num_virtual_tokens=0"),
    C(
        "prompt_tuning_too_long",
        G3,
        "method=prompt_tuning",
        "method.peft_config.num_virtual_tokens=200",
        keys=("method.peft_config.num_virtual_tokens", "task.max_length", "model.max_positions"),
        values=("200",),
    ),
    # 4 task
    C("task_unknown", G4, "task=no_such_task"),
    C("batch_size_0", G4, "task.batch_size=0"),
    C("batch_size_negative", G4, "task.batch_size=-8"),
    C("batch_size_text", G4, "task.batch_size=abc"),
    C("max_length_0", G4, "task.max_length=0"),
    C("max_length_too_long", G4, "task.max_length=100000"),
    C("task_max_steps_negative", G4, "task.max_steps=-1", drop=("trainer.max_steps",)),
    C("task_max_steps_0", G4, "task.max_steps=0", drop=("trainer.max_steps",)),
    C("val_every_0", G4, "task.val_every_n_steps=0"),
    C("split_ratio_1_5", G4, "task.split_ratios.test=1.5"),
    C("metric_unknown", G4, "task.metrics=[no_such_metric]"),
    C("truncation_middle", G4, "task.truncation=middle"),
    # 5 data files (task=csv)
    C("csv_empty", G5, *CSV, setup=setup_text("data.csv", ""), keys=("task.path",), values=("data.csv",)),
    C(
        "csv_header_only",
        G5,
        *CSV,
        setup=setup_text("data.csv", "text,label\n"),
        keys=("task.path",),
        values=("data.csv",),
    ),
    C(
        "csv_one_class",
        G5,
        *CSV,
        setup=setup_text("data.csv", _csv(_rows(40, ["pos"]))),
        keys=("task.path", "task.label_column", "task.label_names"),
        values=("data.csv", "label", "pos"),
        note="issue: silently accepted",
    ),
    C(
        "csv_ragged_row",
        G5,
        *CSV,
        setup=_setup_ragged,
        keys=("task.path",),
        values=("data.csv",),
        note="issue: raw datasets error",
    ),
    C("csv_non_utf8", G5, *CSV, setup=_setup_nonutf8, keys=("task.path",), values=("data.csv",)),
    C(
        "csv_label_outside_map",
        G5,
        *CSV,
        "task.label_map={neg:0,pos:1}",
        setup=setup_text("data.csv", _csv(_rows(39, ["neg", "pos"]) + [("odd one out", "meh")])),
        keys=("task.label_map", "task.path", "task.label_column"),
        values=("meh",),
        note="issue: names another value",
    ),
    C("csv_missing_column", G5, *CSV, "task.text_column=review", setup=setup_good),
    C("csv_file_not_found", G5, "task=csv", "task.path={tmp}/no_such_file.csv"),
    C("csv_directory", G5, "task=csv", "task.path={tmp}/adir.csv", setup=setup_empty_dir),
    C("csv_path_unset", G5, "task=csv", keys=("task.path",), values=("null", "None")),
    C("csv_bad_suffix", G5, "task=csv", "task.path={tmp}/data.xlsx", setup=setup_text("data.xlsx", "x")),
    # 6 trainer
    C("accumulate_0", G6, "trainer.accumulate_grad_batches=0", note="issue: late check"),
    C("trainer_max_steps_negative", G6, "trainer.max_steps=-1", note="issue: OverflowError"),
    C("trainer_max_steps_0", G6, "trainer.max_steps=0", note="issue: silently accepted"),
    C("grad_clip_negative", G6, "trainer.gradient_clip_val=-1", note="issue: silently accepted"),
    C("precision_17", G6, "trainer.precision=17-mixed"),
    C("devices_0", G6, "trainer.devices=0"),
    C("accelerator_magic", G6, "trainer.accelerator=magic"),
    C("log_every_0", G6, "trainer.log_every_n_steps=0"),
    C("trainer_unknown_option", G6, "trainer=no_such_trainer"),
    C("deterministic_maybe", G6, "trainer.deterministic=maybe"),
    # 7 optimizer
    C("lr_negative", G7, "optimizer.lr=-1"),
    C("lr_0", G7, "optimizer.lr=0"),
    C("lr_text", G7, "optimizer.lr=abc"),
    C("weight_decay_negative", G7, "optimizer.weight_decay=-1", note="issue: silently accepted"),
    C("betas_out_of_range", G7, "optimizer.betas=[1.5,0.999]"),
    C("betas_one", G7, "optimizer.betas=[0.9]"),
    C("eps_negative", G7, "optimizer.eps=-1"),
    C("optimizer_unknown_option", G7, "optimizer=sgd"),
    C("optimizer_bad_target", G7, "optimizer._target_=torch.optim.NoSuchOptimizer"),
    # 8 scheduler
    C("warmup_2", G8, "scheduler.warmup_ratio=2.0", note="issue: silently accepted"),
    C("warmup_negative", G8, "scheduler.warmup_ratio=-0.5", note="issue: silently accepted"),
    C("warmup_text", G8, "scheduler.warmup_ratio=abc"),
    C("scheduler_name_unknown", G8, "scheduler.name=no_such_schedule"),
    C("scheduler_unknown_option", G8, "scheduler=no_such_scheduler"),
    C("scheduler_plateau", G8, "scheduler.name=reduce_lr_on_plateau"),
    C("scheduler_unknown_knob", G8, "+scheduler.no_such_knob=1"),
    C("constant_warmup_2", G8, "scheduler=constant", "scheduler.warmup_ratio=2.0"),
    # 9 callbacks
    C(
        "budget_check_every_0",
        G9,
        "callbacks.budget.check_every=0",
        note="issue: ZeroDivisionError mid-training",
    ),
    C("budget_check_every_negative", G9, "callbacks.budget.check_every=-3"),
    C("efficiency_warmup_negative", G9, "callbacks.efficiency.warmup_steps=-1"),
    C("checkpoint_top_k_negative", G9, "callbacks.model_checkpoint.save_top_k=-5"),
    C("checkpoint_mode_sideways", G9, "callbacks.model_checkpoint.mode=sideways"),
    C("progress_refresh_negative", G9, "callbacks.progress_bar.refresh_rate=-1"),
    C("callbacks_unknown_option", G9, "callbacks=no_such_callbacks"),
    C("forgetting_texts_unknown", G9, "callbacks=forgetting", "callbacks.forgetting.texts=nope"),
    C("forgetting_num_texts_0", G9, "callbacks=forgetting", "callbacks.forgetting.num_texts=0"),
    C("checkpoint_monitor_unknown", G9, "callbacks.model_checkpoint.monitor=val/no_such_metric"),
    # 10 logger
    C("logger_unknown_option", G10, "logger=no_such_logger"),
    C("csv_logger_dir_is_file", G10, "logger=csv", "logger.csv.save_dir={tmp}/afile", setup=setup_file),
    C(
        "csv_logger_bad_target",
        G10,
        "logger=csv",
        "logger.csv._target_=lightning.pytorch.loggers.NoSuchLogger",
    ),
    C("csv_logger_name_list", G10, "logger=csv", "logger.csv.name=[a,b]"),
    C("csv_logger_unknown_knob", G10, "logger=csv", "+logger.csv.no_such_knob=1"),
    C("csv_logger_flush_0", G10, "logger=csv", "+logger.csv.flush_logs_every_n_steps=0"),
    C("wandb_offline_maybe", G10, "logger=wandb", "logger.wandb.offline=maybe"),
    C(
        "tensorboard_dir_under_file",
        G10,
        "logger=tensorboard",
        "logger.tensorboard.save_dir={tmp}/afile/tb",
        setup=setup_file,
    ),
    # 11 inference
    C("inference_max_batches_negative", G11, "inference.max_batches=-1", note="issue: silently accepted"),
    C("inference_max_batches_0", G11, "inference.max_batches=0"),
    C("inference_max_batches_text", G11, "inference.max_batches=abc"),
    C("inference_max_batches_float", G11, "inference.max_batches=1.5"),
    C("inference_enabled_maybe", G11, "inference.enabled=maybe"),
    C("inference_enabled_2", G11, "inference.enabled=2"),
    C("inference_unknown_knob", G11, "+inference.no_such_knob=1"),
    C("inference_null", G11, "inference=null", keys=("inference",), values=("null", "None")),
    # 12 paths / faults
    C(
        "results_dir_is_file",
        G12,
        "paths.results_dir={tmp}/afile",
        setup=setup_file,
        note="issue: found only after training",
    ),
    C("results_dir_under_file", G12, "paths.results_dir={tmp}/afile/results", setup=setup_file),
    C("results_dir_proc", G12, "paths.results_dir=/proc/hostile_results", note="read-only for root too"),
    C("results_dir_dev_null", G12, "paths.results_dir=/dev/null"),
    C("output_dir_under_file", G12, "paths.output_dir={tmp}/afile/out", setup=setup_file),
    C(
        "hydra_run_dir_under_file",
        G12,
        "hydra.run.dir={tmp}/afile/run",
        setup=setup_file,
        keys=("hydra.run.dir", "paths.output_dir"),
        values=("afile",),
    ),
    C("results_dir_empty", G12, "paths.results_dir=''", values=("",)),
    C(
        "data_dir_is_file",
        G12,
        "callbacks=forgetting",
        "callbacks.forgetting.texts=corpus",
        "paths.data_dir={tmp}/afile",
        setup=setup_file,
        keys=("paths.data_dir", "callbacks.forgetting.corpus.data_files"),
        values=("afile",),
    ),
    C("regularizer_unknown_option", G13, "regularizer=no_such_regularizer"),
    C("debug_unknown_option", G13, "debug=no_such_debug"),
    C("experiments_unknown_option", G13, "experiments=no_such/study"),
    C("model_unknown_knob", G13, "+model.no_such_knob=1"),
    C("seed_list", G13, "seed=[1,2]"),
    C("split_seed_text", G13, "task.split_seed=abc"),
    C("max_length_text", G13, "task.max_length=abc"),
    C("model_dtype_list", G13, "model.dtype=[float32]"),
    C("trainer_benchmark_maybe", G13, "trainer.benchmark=maybe"),
    C("trainer_precision_bf32", G13, "trainer.precision=bf32"),
    C("trainer_limit_val_negative", G13, "trainer.limit_val_batches=-2"),
    C("sweep_keep_going_2", G13, "sweep.keep_going=2"),
    C("optimizer_amsgrad_maybe", G13, "+optimizer.amsgrad=maybe"),
    C("efficiency_unknown_knob", G13, "+callbacks.efficiency.no_such_knob=1"),
    C("progress_bar_unknown_knob", G13, "+callbacks.progress_bar.no_such_knob=1"),
    C("csv_logger_prefix_list", G13, "logger=csv", "logger.csv.prefix=[1]"),
    C("override_unbalanced_quote", G13, "task.name='abc", values=("abc",)),
    C("output_dir_empty", G13, "paths.output_dir=''", values=("",)),
]
GROUPS = sorted({c.group for c in CASES}, key=lambda g: int(g.split("-")[0]))


# --------------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------------
def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def command_line(case: Case, tmp: Path) -> list[str]:
    own = [o.replace("{tmp}", str(tmp)) for o in case.overrides]
    own_keys = {_key(o) for o in own}
    drop = set(case.drop)
    if "task.max_steps" in own_keys:
        drop.add("trainer.max_steps")  # the budget is one number; the trainer follows the task
    base = [o for o in BASE if _key(o) not in own_keys and _key(o) not in drop]
    base += [f"paths.results_dir={tmp}/results", f"hydra.run.dir={tmp}/run"]
    base = [o for o in base if _key(o) not in own_keys]
    return base + own


@dataclass
class Record:
    id: str
    group: str
    overrides: list[str]
    rc: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    rejected: bool = False
    one_line: bool = False
    no_tb: bool = False
    before_load: bool = False
    no_result: bool = False
    ran_ok: bool = False
    all5: bool = False
    result_status: list[str] = field(default_factory=list)
    last_line: str = ""
    line_detail: str = ""
    loaded: list[str] = field(default_factory=list)
    note: str = ""
    stderr_tail: str = ""
    n_prefixed: int = 0
    stray_results: list[str] = field(default_factory=list)


def real_loads(loaded: list[str]) -> list[str]:
    """Marker lines of models built with weights (a `meta:` line is a weightless dry-run skeleton)."""
    return [line for line in loaded if not line.startswith("meta:")]


def _results(results_dir: Path, tmp: Path, since: float) -> tuple[list[str], list[str]]:
    """Statuses of the result JSONs this case left, and the stray ones it left outside its folder.

    Inside the case folder every *.json below the results folder counts; a results folder outside it
    (e.g. `paths.results_dir=''` is the launch directory, the checkout) is searched one level deep and only
    for files written since the case started that look like results (have a run_id), which are then removed.
    """
    statuses, stray = [], []
    if not results_dir.is_dir():
        return statuses, stray
    inside = results_dir.resolve().is_relative_to(tmp.resolve())
    for p in results_dir.rglob("*.json") if inside else results_dir.glob("*.json"):
        try:
            if not inside and p.stat().st_mtime < since - 1:
                continue
            data = json.loads(p.read_text())
            if not inside and not (isinstance(data, dict) and "run_id" in data):
                continue
            statuses.append(str(data.get("status")) if isinstance(data, dict) else "not-a-dict")
        except (OSError, ValueError):
            if inside:
                statuses.append("unreadable")
            continue
        if not inside:
            stray.append(str(p))
            p.unlink(missing_ok=True)
    return statuses, stray


def _results_dir(cmd: list[str], checkout: Path) -> Path:
    for o in reversed(cmd):
        if o.startswith("paths.results_dir="):
            return checkout / o.split("=", 1)[1].strip("'\"")  # relative: to the launch directory
    return checkout / "results/runs"


def _norm(value: str) -> str:
    """A value as the line may print it: lists and strings without brackets, quotes or spaces."""
    return "".join(ch for ch in value if ch not in "[]'\" ")


def classify_line(stderr: str, case: Case) -> tuple[bool, str, str, int]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    n_prefixed = sum(ln.startswith("peftbench-train: ") for ln in lines)
    return (*judge_line(last, n_prefixed, case), n_prefixed)


def judge_line(last: str, n_prefixed: int, case: Case) -> tuple[bool, str, str]:
    m = LINE_RE.match(last)
    if not m:
        if last.startswith("peftbench-train: "):
            return False, last, "one line, but not of the form `<key>=<value>: <allowed>`"
        return False, last, "last stderr line is not `peftbench-train: <key>=<value>: <allowed>`"
    if n_prefixed != 1:
        return False, last, f"{n_prefixed} `peftbench-train:` lines on stderr"
    last_override = case.overrides[-1].replace("{tmp}", "") if case.overrides else ""
    keys = case.keys or (_key(last_override),)
    values = case.values or (last_override.split("=", 1)[1] if "=" in last_override else "",)
    values = tuple(v.replace("{tmp}", "") for v in values)
    if m.group(1) not in keys:
        return False, last, f"line names key {m.group(1)}, expected {' or '.join(keys)}"
    if not any(_norm(v) in _norm(last) for v in values):
        return False, last, f"line does not name the value ({' or '.join(values)})"
    return True, last, ""


def run_case(case: Case, checkout: Path, hook_dir: Path, timeout: int, python: str) -> Record:
    tmp = Path(tempfile.mkdtemp(prefix=f"hostile_{case.id}_"))
    try:
        if case.setup:
            case.setup(tmp)
        cmd = command_line(case, tmp)
        marker = tmp / "MODEL_LOADED"
        env = {k: v for k, v in os.environ.items() if k not in ("PEFTBENCH_TRACEBACK", "HYDRA_FULL_ERROR")}
        env.update(
            HOSTILE_MARKER=str(marker),
            PYTHONPATH=f"{hook_dir}{os.pathsep}{checkout}",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            WANDB_MODE="offline",
        )
        env.pop("WANDB_API_KEY", None)
        rec = Record(case.id, case.group, [o.replace(str(tmp), "{tmp}") for o in cmd], note=case.note)
        t0, t0_wall = time.monotonic(), time.time()
        try:
            p = subprocess.run(
                [python, "-m", "peftbench.train", *cmd],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, rec.timed_out = None, True
            out = (
                (e.stdout or b"").decode(errors="replace")
                if isinstance(e.stdout, bytes)
                else (e.stdout or "")
            )
            err = (
                (e.stderr or b"").decode(errors="replace")
                if isinstance(e.stderr, bytes)
                else (e.stderr or "")
            )
        rec.wall_s = round(time.monotonic() - t0, 1)
        rec.rc = rc
        rec.rejected = rc is not None and rc != 0
        rec.no_tb = TRACEBACK not in out and TRACEBACK not in err
        rec.loaded = marker.read_text().split() if marker.exists() else []
        rec.before_load = not real_loads(rec.loaded)
        rec.result_status, rec.stray_results = _results(_results_dir(cmd, checkout), tmp, t0_wall)
        rec.no_result = not rec.result_status
        rec.ran_ok = "ok" in rec.result_status
        rec.one_line, last, rec.line_detail, rec.n_prefixed = classify_line(err, case)
        rec.last_line = last.replace(str(tmp), "{tmp}")
        rec.line_detail = rec.line_detail.replace(str(tmp), "{tmp}")
        rec.stderr_tail = "\n".join(err.replace(str(tmp), "{tmp}").splitlines()[-6:])[-1500:]
        rec.all5 = rec.rejected and rec.one_line and rec.no_tb and rec.before_load and rec.no_result
        return rec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
COLS = ["n", "rejected", "ran_ok", "one_line", "no_tb", "before_load", "no_result", "all5"]


def counts(records: list[dict]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for g in [*sorted({r["group"] for r in records}, key=lambda g: int(g.split("-")[0])), "total"]:
        rows = [r for r in records if g == "total" or r["group"] == g]
        table[g] = {"n": len(rows), **{c: sum(bool(r[c]) for r in rows) for c in COLS[1:]}}
    return table


def print_table(records: list[dict]) -> None:
    t = counts(records)
    w = max(len(g) for g in t) + 2
    print("group".ljust(w) + "".join(c.rjust(12) for c in COLS))
    for g, row in t.items():
        print(g.ljust(w) + "".join(str(row[c]).rjust(12) for c in COLS))


def failure_reasons(r: dict) -> list[str]:
    why = []
    if r.get("timed_out"):
        why.append("timed out")
    if not r["rejected"]:
        why.append("exit 0" + (" (ran ok)" if r["ran_ok"] else ""))
    elif r["rc"] != 2:
        why.append(f"exit {r['rc']}")
    if not r["one_line"]:
        why.append(r["line_detail"] or "no one-line message")
    if not r["no_tb"]:
        why.append("traceback")
    if not r["before_load"]:
        why.append("model loaded")
    if not r["no_result"]:
        why.append("result file (" + ",".join(r["result_status"]) + ")")
    return why


def print_failures(records: list[dict]) -> None:
    bad = [r for r in records if not r["all5"]]
    print(f"\n{len(bad)} of {len(records)} cases fail the rule:")
    for r in bad:
        last = r["last_line"] if len(r["last_line"]) <= 140 else r["last_line"][:137] + "..."
        print(f"- {r['group']}/{r['id']}: {'; '.join(failure_reasons(r))}\n    last stderr: {last}")


def compare(before: list[dict], after: list[dict]) -> str:
    tb, ta = counts(before), counts(after)
    out = ["| group | " + " | ".join(COLS) + " |", "|---" * (len(COLS) + 1) + "|"]
    for g in [*[g for g in ta if g != "total"], *[g for g in tb if g not in ta and g != "total"], "total"]:
        b, a = tb.get(g, {}), ta.get(g, {})
        cells = [
            f"{b.get(c, '-')} → {a.get(c, '-')}" if b.get(c) != a.get(c) else str(a.get(c)) for c in COLS
        ]
        out.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="group name(s) or number(s), comma-separated (e.g. 5 or 5-data,6)")
    ap.add_argument("--case", help="case id(s), comma-separated")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--timeout", type=int, default=TIMEOUT_S)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument(
        "--reclassify",
        type=Path,
        metavar="FILE.json",
        help="re-judge criterion (b) of a records file with the current rules (rewrites it)",
    )
    args = ap.parse_args()

    if args.compare:
        before, after = (json.loads(p.read_text())["records"] for p in args.compare)
        print(compare(before, after))
        return
    if args.reclassify:
        data = json.loads(args.reclassify.read_text())
        by_id = {c.id: c for c in CASES}
        for r in data["records"]:
            case = by_id.get(r["id"])
            if case is None:
                continue
            n = r.get("n_prefixed")
            if n is None:  # older file: count within the stored stderr tail
                n = sum(ln.startswith("peftbench-train: ") for ln in r["stderr_tail"].splitlines())
            r["one_line"], _, r["line_detail"] = judge_line(r["last_line"], n, case)
            r["all5"] = r["rejected"] and r["one_line"] and r["no_tb"] and r["before_load"] and r["no_result"]
        args.reclassify.write_text(json.dumps(data, indent=1))
        print_table(data["records"])
        print_failures(data["records"])
        return
    cases = CASES
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        cases = [c for c in cases if c.group in wanted or c.group.split("-")[0] in wanted]
    if args.case:
        wanted = {w.strip() for w in args.case.split(",")}
        cases = [c for c in cases if c.id in wanted]
    if args.limit:
        cases = cases[: args.limit]
    if args.list:
        for c in cases:
            print(f"{c.group}/{c.id}: {' '.join(c.overrides)}")
        print(f"{len(cases)} cases")
        return
    if not args.checkout:
        ap.error("--checkout DIR is required (or --compare / --list)")
    checkout = args.checkout.resolve()
    hook_dir = Path(tempfile.mkdtemp(prefix="hostile_hook_"))
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    git = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    meta = {
        "checkout": str(checkout),
        "commit": git,
        "dirty": dirty,
        "started": time.strftime("%FT%T"),
        "base": BASE,
    }
    records: list[dict] = []
    try:
        for i, case in enumerate(cases, 1):
            rec = asdict(run_case(case, checkout, hook_dir, args.timeout, args.python))
            records.append(rec)
            mark = "ok  " if rec["all5"] else "FAIL"
            print(
                f"[{i}/{len(cases)}] {mark} {case.group}/{case.id} rc={rec['rc']} {rec['wall_s']}s",
                file=sys.stderr,
                flush=True,
            )
            if args.out:
                args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)
    meta["finished"] = time.strftime("%FT%T")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"checkout {checkout} @ {git}{' (dirty)' if dirty else ''}: {len(records)} cases")
    print_table(records)
    print_failures(records)


if __name__ == "__main__":
    main()
