"""The EnergyMonitor callback: an estimate of the energy a run's training drew (kWh) and the CO₂ it emitted (kg).

An estimate, not a meter reading, made by codecarbon's ``OfflineEmissionsTracker`` (no network, no files: its
outputs are switched off and nothing is written to the working folder). It samples power while the fit runs
(training and its validations, the span of ``train_time_s``; the test pass and the inference timings after it
are left out):

- CPU: the RAPL energy counters where Linux exposes them readably; otherwise the CPU's TDP from codecarbon's
  table scaled by CPU utilisation (of this process and its children under ``tracking_mode: process``, of the
  whole machine under ``machine``); a constant where neither is known;
- GPU: NVML's energy counter of each visible NVIDIA GPU (the whole device);
- RAM: codecarbon's rule of thumb, about 5 W per memory module estimated from the RAM size (x86);
- CO₂: the energy times the yearly carbon intensity of the grid of ``country_iso_code`` (codecarbon's
  energy-mix table).

``efficiency.energy_source`` records the codecarbon version, the mode, the hardware methods it chose and the
country, so two figures are comparable only when those agree. codecarbon is optional (``pip install
peftbench[energy]``): without it, or with ``enabled: false``, the figures are absent and the leaderboard
shows –. Under several processes (DDP) the figures are rank 0's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L

from peftbench.errors import ConfigError
from peftbench.knobs import check_value

log = logging.getLogger("peftbench")
TRACKING_MODES = ("process", "machine")


def _codecarbon() -> Any | None:
    """The codecarbon module, quiet, or None where it is not installed."""
    try:
        import codecarbon
    except ImportError:
        return None
    # codecarbon logs INFO lines to its own console handler from its constructor on; only its errors show
    # (CODECARBON_LOG_LEVEL, codecarbon's own variable, still wins).
    logging.getLogger("codecarbon").setLevel(_log_level().upper())
    return codecarbon


def _log_level() -> str:
    return os.environ.get("CODECARBON_LOG_LEVEL", "error")


def grid_countries() -> list[str]:
    """The 3-letter ISO codes codecarbon has a grid carbon intensity for (its energy-mix table)."""
    from codecarbon.input import DataSource

    return sorted(DataSource().get_global_energy_mix_data())


class EnergyMonitor(L.Callback):
    """Energy (kWh) and CO₂ (kg) of the fit, estimated by codecarbon offline; see the module docstring."""

    def __init__(
        self, enabled: bool = True, country_iso_code: str = "USA", tracking_mode: str = "process"
    ) -> None:
        check_value("tracking_mode", tracking_mode, {"choices": TRACKING_MODES})
        self.enabled = enabled  # false: no tracker thread, no figures
        self.country_iso_code = str(country_iso_code).upper()  # whose grid's carbon intensity prices a kWh
        self.tracking_mode = tracking_mode  # process: this process and its children; machine: everything
        self.figures: dict[str, Any] = {}
        self._tracker: Any = None
        self._codecarbon = _codecarbon() if enabled else None
        if enabled and self._codecarbon is None:
            log.info("no energy estimate: codecarbon is not installed (pip install 'peftbench[energy]')")
        if self._codecarbon is not None:
            countries = grid_countries()
            if self.country_iso_code not in countries:
                raise ConfigError(
                    f"country_iso_code={country_iso_code!r}: codecarbon has no grid carbon intensity for it; "
                    f"allowed: a 3-letter ISO code of its {len(countries)} countries, e.g. USA, FRA, DEU, GBR, "
                    "CHN, IND"
                )

    # Started at setup, before on_fit_start: codecarbon's first start in a process detects the hardware (~2 s on
    # CPU) and imports its tables; neither must land in the fit's timers or its memory baseline.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._codecarbon is None or not trainer.is_global_zero:
            return
        self.figures = {}
        self._tracker = self._codecarbon.OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            tracking_mode=self.tracking_mode,
            output_methods=[],  # no emissions.csv, no API, no logger output: the figures go to the result
            emissions_endpoint=None,  # a configured HTTP endpoint (~/.codecarbon.config) would be the network
            allow_multiple_runs=True,  # parallel sweep jobs each track their own process; no lock file
            log_level=_log_level(),
            project_name="peftbench",
        )
        self._tracker.start()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tracker = self._tracker
        data = self._stop()
        if data is None:
            return
        self.figures = {
            "train_energy_kwh": float(data.energy_consumed),
            "train_energy_cpu_kwh": float(data.cpu_energy),
            "train_energy_gpu_kwh": float(data.gpu_energy),
            "train_energy_ram_kwh": float(data.ram_energy),
            "train_co2_kg": float(data.emissions),
            "energy_source": _source(tracker, data),
        }
        numeric = {f"eff/{k}": v for k, v in self.figures.items() if isinstance(v, float)}
        for logger in trainer.loggers:
            logger.log_metrics(numeric, step=trainer.global_step)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._stop()  # a failed run records no estimate, and leaves no sampling thread behind

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop()

    def _stop(self) -> Any | None:
        """Stop the tracker if it runs; its final figures, or None (codecarbon swallows its own failures)."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return None
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            log.warning("no energy estimate: codecarbon did not finish its measurement")
        return data

    def report(self, result: Any) -> None:
        """The energy figures in the result's ``efficiency`` section (results.Reporter); absent when not made."""
        result.efficiency.update(self.figures)


def _source(tracker: Any, data: Any) -> str:
    """How the figures were made: codecarbon's version, mode and hardware methods, and the grid."""
    # codecarbon names the methods it chose ("CPU(Intel RAPL)", "CPU(Cpu Load)", "GPU(...)") only in its config
    # dict, not in its public results: read defensively.
    conf = getattr(tracker, "_conf", None) or {}
    hardware = ", ".join(str(h) for h in (conf.get("hardware") or [])) or "hardware not reported"
    return (
        f"codecarbon {data.codecarbon_version} offline estimate, {data.tracking_mode} mode: {hardware}; "
        f"grid {data.country_iso_code}"
    )
