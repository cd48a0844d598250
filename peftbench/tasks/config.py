"""The ``task:`` config group as a typed, validated dataclass.

A task is data, not code: where the rows come from, which columns mean what, how the splits are
drawn, how inputs are truncated and how predictions are scored. Everything here is checked before
any data or model loads; a bad value stops with one line naming the key, the value and what is
allowed (a ConfigError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from omegaconf import DictConfig

from peftbench.errors import ConfigError

if TYPE_CHECKING:
    from peftbench.tasks.kinds import TaskKind

SOURCE_KINDS = ("hub", "csv", "json", "parquet", "synthetic")
# File suffix -> datasets builder, for the `task.path=FILE` shorthand.
SUFFIX_KINDS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TRUNCATIONS = ("head", "tail", "head+tail")
# Roles a split can play: train, validation (checkpoint selection), test (reported) and further
# reported splits named test_<suffix> (e.g. MNLI's test_mismatched), scored as test/<metric>_<suffix>.
EXTRA_TEST_SPLIT = re.compile(r"^test_[a-z0-9_]+$")


@dataclass
class TaskConfig:
    """One task: where the data is, which columns mean what, how it is scored and for how long it trains."""

    name: str
    source: dict[str, Any]  # kind: hub|csv|json|parquet|synthetic, plus that kind's options
    metrics: list[str] | dict[str, Any]  # names from peftbench.tasks.metrics, or name -> spec
    monitor: str  # e.g. val/accuracy: picks the checkpoint and is what sweepers optimise
    headline: str  # metric reported in tables, e.g. accuracy
    label_names: list[str] = field(default_factory=list)  # class names by index (empty for regression)
    num_labels: int | None = None  # None: len(label_names) for classification, 1 for regression
    type: str = "classification"  # a task kind: classification | regression | generation (tasks/kinds/)
    path: str | None = None  # a local csv/tsv/json/jsonl/parquet file; when set it replaces `source`
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_map: dict[Any, int] | None = None  # raw label -> class index (None: indices or label names)
    splits: dict[str, str | None] = field(default_factory=dict)  # role -> source split (None: carve)
    split_ratios: dict[str, float] = field(default_factory=dict)  # validation/test carved when unmapped
    split_seed: int = 0
    max_length: int = 128
    truncation: Literal["head", "tail", "head+tail"] = "head"  # which tokens of a long input are kept
    head_fraction: float = 0.25  # head+tail: share of the token budget taken from the start
    batch_size: int = 16
    eval_batch_size: int = 64
    group_by_length: bool = False
    max_steps: int = 400
    epochs: int | None = None  # set: max_steps = epochs x steps per epoch, validation once per epoch
    val_every_n_steps: int = 100
    # carved_validation: select on the validation split (never the reported one). reported_split: select on
    # the reported test split, as some papers do (LoRA's Table 2 on GLUE dev); paper reproductions only.
    selection: Literal["carved_validation", "reported_split"] = "carved_validation"
    # max or min: follows the monitored metric's higher_is_better (val/loss: min). None derives it; an explicit
    # value must agree (older configs spell it out).
    monitor_mode: Literal["max", "min"] | None = None
    peft_task_type: str = "SEQ_CLS"  # must be the kind's (SEQ_CLS; CAUSAL_LM for generation)
    fixture: dict[str, Any] | None = None  # tiny local stand-in: {source: ..., split_ratios: ...}
    use_fixture: bool = False  # run on the fixture instead of the source (tests, offline smoke runs)
    # type=generation: prompt, decoding, answer (tasks/generation.py)
    generation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.use_fixture:
            self._swap_in_fixture()
        if self.path is not None:
            self._source_from_path()
        source_kind = self.source.get("kind")
        if source_kind not in SOURCE_KINDS:
            raise ConfigError(f"task.source.kind={source_kind!r}: allowed {', '.join(SOURCE_KINDS)}")
        self.kind.check(self)  # labels (sets num_labels), peft task type, the type's own blocks
        for key in ("max_length", "batch_size", "eval_batch_size", "max_steps", "val_every_n_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key}={getattr(self, key)}: must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"task.epochs={self.epochs}: must be >= 1 (or null for a step budget)")
        if self.split_seed < 0:
            raise ConfigError(f"task.split_seed={self.split_seed}: must be >= 0")
        self._check_splits()
        if not 0 <= self.head_fraction <= 1:
            raise ConfigError(f"task.head_fraction={self.head_fraction}: must be in [0, 1]")
        if self.truncation != "head" and self.text_pair_column:
            raise ConfigError(
                f"task.truncation={self.truncation}: sentence-pair tasks allow only head "
                "(the tokenizer trims the longer input)"
            )
        from peftbench.tasks.metrics import monitor_mode, normalise_metrics

        self.metrics = normalise_metrics(self.metrics, self.type, self.num_labels)
        if not self.monitor.startswith("val/"):
            raise ConfigError(f"task.monitor={self.monitor}: must be a validation metric (val/<name>)")
        known = set(self.metrics) | {"loss"}
        if self.monitor.removeprefix("val/") not in known:
            raise ConfigError(f"task.monitor={self.monitor}: allowed val/<one of {sorted(known)}>")
        if self.headline not in self.metrics:
            raise ConfigError(f"task.headline={self.headline}: allowed one of {sorted(self.metrics)}")
        derived = monitor_mode(self.monitor, self.metrics)
        if self.monitor_mode not in (None, derived):
            direction = "lower" if derived == "min" else "higher"
            raise ConfigError(
                f"task.monitor_mode={self.monitor_mode}: {self.monitor} is {direction}-is-better, so allowed "
                f"{derived} (or leave it out: it follows the metric)"
            )
        self.monitor_mode = derived

    # --- checks and normalisation ------------------------------------------------------------------
    def _swap_in_fixture(self) -> None:
        if not self.fixture:
            raise ConfigError(f"task.use_fixture=true: task {self.name} has no fixture (task.fixture=null)")
        # A fixture is {source: ..., split_ratios: ...}, or just a source (kind: ...) for short.
        fixture = self.fixture if "source" in self.fixture else {"source": self.fixture}
        unknown = sorted(set(fixture) - {"source", "split_ratios"})
        if unknown:
            raise ConfigError(
                f"task.fixture.{unknown[0]}={fixture[unknown[0]]!r}: unknown key; allowed: source, split_ratios"
            )
        self.source = dict(fixture["source"])
        self.split_ratios = {**self.split_ratios, **fixture.get("split_ratios", {})}
        self.path = None  # the fixture wins over a path, so `use_fixture=true` always runs offline

    def _source_from_path(self) -> None:
        kind = SUFFIX_KINDS.get(Path(self.path).suffix.lower())
        if kind is None:
            raise ConfigError(f"task.path={self.path}: suffix allowed {', '.join(SUFFIX_KINDS)}")
        # The source's builder options (task.source.encoding=latin-1, a delimiter) still apply to the file when
        # they are for the same builder; options of another builder would be refused by it.
        given = dict(self.source or {})
        options = (
            {k: v for k, v in given.items() if k not in ("kind", "data_files")}
            if given.get("kind") == kind
            else {}
        )
        source: dict[str, Any] = {**options, "kind": kind, "data_files": self.path}
        if Path(self.path).suffix.lower() == ".tsv":
            source["delimiter"] = "\t"
        self.source = source

    def _check_splits(self) -> None:
        for role in self.splits:
            if role not in ("train", "validation", "test") and not EXTRA_TEST_SPLIT.match(role):
                raise ConfigError(f"task.splits.{role}: allowed roles train, validation, test, test_<name>")
        for role in ("train", *self.extra_test_splits):
            if self.splits.get(role, role) is None:
                raise ConfigError(
                    f"task.splits.{role}=null: only validation and test can be carved from train"
                )
        for split, ratio in self.split_ratios.items():
            if split not in ("validation", "test") or isinstance(ratio, bool):
                raise ConfigError(f"task.split_ratios.{split}: allowed keys validation, test")
            if not (0 < ratio < 1 or (isinstance(ratio, int) and ratio >= 1)):
                raise ConfigError(
                    f"task.split_ratios.{split}={ratio}: a fraction in (0, 1) or a row count >= 1"
                )

    # --- derived ------------------------------------------------------------------------------
    @property
    def kind(self) -> TaskKind:
        """What varies with ``type``: label casting, tokenisation, the model head, predictions (tasks/kinds/)."""
        from peftbench.tasks.kinds import task_kind  # the kinds import datasets and transformers: load lazily

        return task_kind(self.type)

    @property
    def extra_test_splits(self) -> list[str]:
        """Further reported splits besides ``test`` (e.g. ``test_mismatched``), in config order."""
        return [role for role in self.splits if EXTRA_TEST_SPLIT.match(role)]

    @property
    def test_postfixes(self) -> list[str]:
        """Metric-name postfix per reported split: '' for test, '_mismatched' for test_mismatched."""
        return ["", *(f"_{role.removeprefix('test_')}" for role in self.extra_test_splits)]

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> TaskConfig:
        from peftbench.config import dataclass_from_cfg

        return dataclass_from_cfg(cls, cfg, "task")
