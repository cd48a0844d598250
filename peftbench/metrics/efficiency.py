"""The EfficiencyMonitor callback: what a run costs, measured the same way for every method.

Cheap by design (bench/overhead.py measures it): per step it reads a clock and adds two numbers
kept on the device; the only host sync is at the end of training (plus a CUDA sync per timed
step on GPU, where timings would otherwise measure kernel launches, not work).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from peftbench.knobs import check_value
from peftbench.methods.base import logical_numel
from peftbench.metrics import breakdown, memory


def device_clock(trainer: L.Trainer) -> float:
    """A clock reading after the device's queued work: on GPU a timing would otherwise measure kernel launches."""
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class EfficiencyMonitor(L.Callback):
    """Parameters, training throughput (samples/s, non-padding tokens/s), peak memory and its breakdown
    (peftbench/metrics/breakdown.py: weights, gradients, optimizer state, saved activations, the rest), wall
    time."""

    def __init__(self, warmup_steps: int = 5) -> None:
        check_value("warmup_steps", warmup_steps, {"ge": 0}, integer=True)
        self.warmup_steps = warmup_steps  # timed steps skipped at the start (allocator, autotuning, caches)
        self.figures: dict[str, float] = {}
        self._reset_timers()

    def _reset_timers(self) -> None:
        self._last: float | None = None
        self._steps_seen = 0
        self._timed_steps = 0
        self._timed_seconds = 0.0
        self._timed_samples = 0
        self._timed_tokens: torch.Tensor | int = 0
        self._fit_start = 0.0
        self._paused = False  # set by a validation: the next step's clock starts at its own batch start
        self._validation_seconds = 0.0  # validations inside fit, with the checkpoint writes that follow them
        # The open validation window, closed by the next training step or by the end of fit.
        self._validation_start: float | None = None
        # The memory breakdown's tensor parts: sizes, measured once (gradients, optimizer state) or on the
        # largest padded batch so far (saved activations).
        self._weights: dict[str, int] = {}
        self._gradients: int | None = None
        self._optimizer_state: int | None = None
        self._activations = 0
        self._largest_batch = 0
        self._probe: breakdown.SavedActivationProbe | None = None

    # --- fit ----------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_timers()
        model = pl_module.model
        trainable = pl_module.trainable_parameter_count()
        total = sum(logical_numel(p) for p in model.parameters())
        self.figures.update(
            {
                "trainable_params": trainable,
                "total_params": total,
                "trainable_ratio_pct": 100.0 * trainable / total if total else 0.0,
            }
        )
        self._weights = breakdown.weight_bytes(model)
        self.figures["peak_mem_source"] = memory.reset_peak()  # type: ignore[assignment]
        # The loaded, transformed model is the baseline: the increment over it is what training itself costs
        # (on CPU the process's RSS already holds ~600 MiB of libraries and weights, which compresses ratios).
        self._baseline = memory.current_mb()
        self._fit_start = time.perf_counter()

    def _close_validation(self) -> None:
        if self._validation_start is not None:
            self._validation_seconds += time.perf_counter() - self._validation_start
            self._validation_start = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._close_validation()
        if self._paused:  # after a validation and its checkpoint write: neither is training time
            self._last = device_clock(trainer)
            self._paused = False
        padded = int(batch["input_ids"].numel()) if "input_ids" in batch else 0
        if padded > self._largest_batch:  # activations grow with the padded batch: probe the largest one
            self._largest_batch = padded
            self._probe = breakdown.SavedActivationProbe(pl_module).__enter__()

    def _end_probe(self) -> None:
        if self._probe is not None:
            self._probe.__exit__(None, None, None)
            self._activations = max(self._activations, self._probe.bytes)
            self._probe = None

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._end_probe()  # the forward is over: what it saved is what backward will read

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._gradients is None:  # every gradient is alive here; their sizes do not change between steps
            self._gradients = breakdown.gradient_bytes(pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._end_probe()  # never leave the saved-tensor hooks installed after a failed step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = device_clock(trainer)
        self._end_probe()  # a step that skipped backward (e.g. a skipped non-finite loss)
        if self._optimizer_state is None and trainer.global_step >= 1:  # the state exists after a first step
            self._optimizer_state = breakdown.optimizer_state_bytes(trainer.optimizers)
        self._steps_seen += 1
        # The interval from the previous step end includes data loading, forward, backward and the optimizer.
        if self._last is not None and self._steps_seen > self.warmup_steps:
            self._timed_steps += 1
            self._timed_seconds += now - self._last
            self._timed_samples += int(batch["input_ids"].shape[0])
            if "attention_mask" in batch:
                self._timed_tokens = self._timed_tokens + batch["attention_mask"].sum()
            else:
                self._timed_tokens = self._timed_tokens + batch["input_ids"].numel()
        self._last = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Stop the step clock: validation, and the checkpoint write that follows it (checkpoint callbacks run
        # last), must not count as training time. The next training batch restarts it.
        if trainer.state.fn == "fit" and self._last is not None:
            self._paused = True
        if trainer.state.fn == "fit":  # the sanity check too: a run pays it
            self._validation_start = device_clock(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_validation()  # the last validation (and its checkpoint write) ends the fit
        seconds = self._timed_seconds
        tokens = (
            int(self._timed_tokens.item())
            if isinstance(self._timed_tokens, torch.Tensor)
            else self._timed_tokens
        )
        peaks = memory.peak_mb()
        kind = "cuda_allocated" if "peak_cuda_allocated_mb" in peaks else "cpu_rss"
        peak = peaks[f"peak_{kind.removeprefix('cpu_')}_mb"]
        self.figures.update(
            {
                "train_time_s": time.perf_counter() - self._fit_start,
                "timed_steps": self._timed_steps,
                "train_samples_per_s": self._timed_samples / seconds if seconds else float("nan"),
                "train_tokens_per_s": tokens / seconds if seconds else float("nan"),
                "train_step_time_ms": 1000 * seconds / self._timed_steps
                if self._timed_steps
                else float("nan"),
                # Where the wall time went (with time_setup_s, time_data_s, time_test_s, time_inference_s from
                # the run): every step at the timed steps' mean, and the validations with their checkpoint writes.
                "time_steps_s": seconds / self._timed_steps * trainer.global_step
                if self._timed_steps
                else float("nan"),
                "time_validation_s": self._validation_seconds,
                # One figure per run, labelled with its source: CPU RSS and CUDA allocated never share a column.
                "peak_mem_mb": peak,
                "peak_mem_kind": kind,
                "peak_mem_baseline_mb": self._baseline[kind],
                "peak_mem_increment_mb": peak - self._baseline[kind],
                **peaks,
                **breakdown.breakdown(
                    peak,
                    self._baseline[kind],
                    self._weights,
                    self._gradients or 0,
                    self._optimizer_state or 0,
                    self._activations,
                ),
            }
        )
        numeric = {f"eff/{k}": float(v) for k, v in self.figures.items() if isinstance(v, int | float)}
        for logger in trainer.loggers:
            logger.log_metrics(numeric, step=trainer.global_step)

    def report(self, result: Any) -> None:
        """The ``efficiency`` section of the result (results.Reporter)."""
        result.efficiency.update(self.figures)
