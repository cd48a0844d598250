"""The ``task:`` config group as a typed, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from omegaconf import DictConfig

from peftbench.errors import ConfigError

SOURCE_KINDS = ("hub", "csv", "json", "parquet", "synthetic")


@dataclass
class TaskConfig:
    """One task: where the data is, which columns mean what, how it is scored and for how long it trains."""

    name: str
    source: dict[str, Any]  # kind: hub|csv|json|parquet|synthetic, plus that kind's options
    num_labels: int
    label_names: list[str]
    metrics: dict[str, Any]  # name -> torchmetrics _target_ config
    monitor: str  # e.g. val/accuracy: picks the checkpoint and is what sweepers optimise
    headline: str  # metric reported in tables, e.g. accuracy
    type: Literal["classification", "regression", "generation"] = "classification"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_map: dict[Any, int] | None = None  # raw label value -> class index (None: labels already 0..n-1)
    splits: dict[str, str | None] = field(default_factory=dict)  # train/validation/test -> source split
    split_ratios: dict[str, float] = field(default_factory=dict)  # validation/test carved when unmapped
    split_seed: int = 0
    max_length: int = 128
    batch_size: int = 16
    eval_batch_size: int = 64
    group_by_length: bool = False
    max_steps: int = 400
    val_every_n_steps: int = 100
    monitor_mode: Literal["max", "min"] = "max"
    peft_task_type: str = "SEQ_CLS"
    fixture: dict[str, Any] | None = None  # a tiny local source with the same columns (tests, offline checks)
    generation: dict[str, Any] | None = (
        None  # type=generation: prompt, decoding, answer (tasks/generation.py)
    )

    def __post_init__(self) -> None:
        kind = self.source.get("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"task.source.kind={kind!r}: allowed {', '.join(SOURCE_KINDS)}")
        if self.num_labels < 1:
            raise ConfigError(f"task.num_labels={self.num_labels}: must be >= 1")
        if self.type == "classification" and len(self.label_names) != self.num_labels:
            raise ConfigError(
                f"task.label_names={self.label_names}: needs {self.num_labels} names (task.num_labels)"
            )
        for key in ("max_length", "batch_size", "eval_batch_size", "max_steps", "val_every_n_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key}={getattr(self, key)}: must be >= 1")
        if self.split_seed < 0:
            raise ConfigError(f"task.split_seed={self.split_seed}: must be >= 0")
        for split, ratio in self.split_ratios.items():
            if split not in ("validation", "test") or not 0 < ratio < 1:
                raise ConfigError(f"task.split_ratios.{split}={ratio}: validation/test ratios in (0, 1)")
        if not self.monitor.startswith("val/"):
            raise ConfigError(f"task.monitor={self.monitor}: must be a validation metric (val/<name>)")
        known = set(self.metrics) | {"loss"}
        if self.monitor.removeprefix("val/") not in known:
            raise ConfigError(f"task.monitor={self.monitor}: allowed val/<one of {sorted(known)}>")
        if self.headline not in self.metrics:
            raise ConfigError(f"task.headline={self.headline}: allowed one of {sorted(self.metrics)}")
        # --- generation tasks (decoders; docs/decoders.md) ---
        if self.type == "generation":
            from peftbench.tasks.generation import GenerationSpec

            GenerationSpec.from_dict(self.generation)
            if self.peft_task_type != "CAUSAL_LM":
                raise ConfigError(
                    f"task.peft_task_type={self.peft_task_type}: generation tasks train a causal LM (CAUSAL_LM)"
                )
        elif self.generation is not None:
            raise ConfigError(
                f"task.generation: set, but task.type={self.type} (only generation tasks use it)"
            )

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> TaskConfig:
        from peftbench.config import dataclass_from_cfg

        return dataclass_from_cfg(cls, cfg, "task")
