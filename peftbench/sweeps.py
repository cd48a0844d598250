"""Sweep-level behaviour of a run: resume, failure statuses, search variants, tuned selection.

Kept apart from ``train.py`` so the training path stays readable; ``train.run`` calls these few
functions. Everything here works under any Hydra launcher (basic, ours, joblib, submitit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError, Interrupted
from peftbench.results import RunResult, compute_run_id, find_ok_result, provenance, utc_now, write_result
from peftbench.search import validation_score

# Hydra sweepers that propose points of a hyperparameter search: their jobs are `trial`s.
SEARCH_SWEEPERS = ("optuna", "nevergrad", "ax")


# --- resolvers used by the logger presets ---------------------------------------------------------------
def wandb_offline() -> bool:
    """Whether wandb logs offline (files under the run folder, `wandb sync` uploads them later).

    WANDB_MODE decides when set (online; offline, dryrun, disabled); otherwise online exactly when wandb itself
    finds credentials: WANDB_API_KEY, the ~/.netrc that `wandb login` writes (or $NETRC), an identity token
    file, a key in wandb's settings. Asked without the network (nothing is verified with the server), so a
    machine without it still starts its run; wandb is imported only here, when a wandb logger resolves.
    """
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    return mode != "online" and not wandb_credentials()


def wandb_credentials() -> bool:
    """wandb finds an API key or identity token for its server, as `wandb.init` would, without a prompt."""
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # no wandb (the logger itself then says so), or a release from before wbauth
        try:
            import wandb
        except ImportError:
            return bool(os.environ.get("WANDB_API_KEY"))
        return bool(wandb.api.api_key)  # older releases' lookup: environment, netrc, settings; no network
    # wandb's process-wide settings are read from the environment once, when first made. Made here, they would
    # predate the WANDB_MODE that Lightning's offline logger sets, and wandb.init would then ask for a key it
    # cannot get (UsageError). So what this question makes, it takes down again. `_singleton` is private, but
    # it is the only way to tell whether the settings existed before the question.
    made_here = getattr(wandb_setup, "_singleton", None) is None
    try:
        found = wbauth.authenticate_session(
            host=wandb_setup.singleton().settings.base_url,
            source="peftbench",
            prompt=False,
            verify=False,
            update_session=False,  # a question only: wandb.init loads the credentials itself
        )
    except AuthenticationError:  # a key of the wrong shape: online, and wandb.init says what is wrong
        return True
    finally:
        if made_here:
            wandb_setup.teardown()
    return found is not None


def sweep_name() -> str:
    """The multirun's folder name (one group per sweep), or `single` for a single run."""
    folder = sweep_dir()
    return Path(folder).name if folder else "single"


for _name, _function in (("peftbench.wandb_offline", wandb_offline), ("peftbench.sweep_name", sweep_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _function)


# --- checks and context ---------------------------------------------------------------------------------
def check_trainer(cfg: DictConfig) -> None:
    """Refuse what Lightning cannot run here before any model loads (FSDP needs CUDA GPUs)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto") or "auto"
    if isinstance(strategy, DictConfig):  # an instantiated strategy: judge by its class
        strategy = str(strategy.get("_target_", ""))
    strategy = str(strategy)
    if "fsdp" in strategy.lower():
        accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
        import torch

        on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
        if on_cpu:
            raise ConfigError(
                f"trainer.strategy={strategy}: Lightning's FSDP shards over CUDA GPUs and this run would be on "
                "the CPU; use trainer=ddp (CPU or GPU) or trainer=default"
            )


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


# Launchers that start a fresh process for every job (ours, submitit's); the basic launcher runs them all in
# this one, and joblib's loky reuses its worker processes.
FRESH_PROCESS_LAUNCHERS = ("SubprocessLauncher", "SlurmLauncher", "LocalLauncher")
# Set by the subprocess launcher in each job's process: "fork server" or "fresh interpreter" (job_provenance).
JOB_START_ENV = "PEFTBENCH_JOB_START"
FORKED, FRESH = "fork server", "fresh interpreter"  # its two values


def one_job_per_process() -> bool:
    """Whether this process runs only the current job (a single run, or a launcher's fresh child)."""
    if not is_multirun():
        return True
    target = str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default="") or "")
    return target.rsplit(".", 1)[-1] in FRESH_PROCESS_LAUNCHERS


def sweep_dir() -> str | None:
    """The multirun's folder, absolute; None for a single run."""
    if not (HydraConfig.initialized() and is_multirun()):
        return None
    return str(Path(HydraConfig.get().sweep.dir).resolve())


def job_provenance() -> dict[str, Any]:
    """Which job of the multirun this is (number, overrides, how its process started); empty for a single run.

    ``job_start`` matters for CPU memory: a job forked from the launcher's fork server shares the libraries'
    pages with it and reports a peak RSS ~100 MB lower than a fresh interpreter's; peak minus load
    (``peak_mem_increment_mb``) compares across the two."""
    if not is_multirun():
        return {}
    hydra_cfg = HydraConfig.get()
    return {
        "job_num": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
        "job_start": os.environ.get(JOB_START_ENV, "in the launcher's process"),
    }


def search_context(cfg: DictConfig | None = None) -> tuple[str, dict[str, Any] | None]:
    """(variant, search record): a job proposed by a search sweeper, or a point of a grid search
    (``sweep.search``), is a `trial`; a run whose config takes values a search chose
    (``${peftbench.chosen:...}``) is `tuned`; anything else `default`."""
    if cfg is not None:
        from peftbench.search import report_record

        record = report_record(cfg)
        if record is not None:
            return "tuned", record
    if not is_multirun():
        return "default", None
    searched = list(OmegaConf.select(cfg, "sweep.search", default=None) or []) if cfg is not None else []
    if searched:
        params = HydraConfig.get().sweeper.get("params") or {}
        return "trial", {
            "sweeper": "grid",
            "keys": searched,
            # the grid as the study's sweeper.params spell it; None when the command line gave it (a job sees
            # only its own point)
            "space": {key: (None if params.get(key) is None else str(params.get(key))) for key in searched},
            "sweep_dir": str(Path(HydraConfig.get().sweep.dir).resolve()),
        }
    sweeper = HydraConfig.get().sweeper
    target = str(sweeper.get("_target_", ""))
    kind = next((name for name in SEARCH_SWEEPERS if name in target.lower()), None)
    if kind is None:
        return "default", None
    sampler = sweeper.get("sampler")
    record = {
        "sweeper": kind,
        "n_trials": sweeper.get("n_trials"),
        "sampler": str(sampler.get("_target_")) if sampler is not None else None,
        "direction": str(sweeper.get("direction")),
        "space": OmegaConf.to_container(sweeper.get("params"), resolve=False)
        if sweeper.get("params")
        else None,
        "sweep_dir": str(Path(HydraConfig.get().sweep.dir).resolve()),
    }
    return "trial", record


def describe_error(error: BaseException) -> str:
    """One line for a result's `error`; interruptions carry no message of their own, so say what happened."""
    text = str(error).strip()
    if isinstance(error, KeyboardInterrupt | SystemExit) and not isinstance(error, Interrupted):
        # Lightning's SIGTERMException and its exit after Ctrl-C carry no message (or just an exit code).
        signum = received_signal()
        what = signal.Signals(signum).name if signum is not None else "Ctrl-C or SIGTERM"
        text = f"interrupted ({what}) before the run reached its test"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_status(error: BaseException) -> str:
    """Map an exception to a result status: killed, oom, diverged or failed."""
    from peftbench.metrics.budget import RunDiverged

    # Ctrl-C or SIGTERM: Lightning turns KeyboardInterrupt into a graceful shutdown that ends in
    # SystemExit, so the run never reaches its test -- it must not be recorded as ok.
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return "killed"
    if isinstance(error, RunDiverged):
        return "diverged"
    import torch

    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "oom"
    return "failed"


def record_failure(cfg: DictConfig, status: str, error: str) -> Path:
    """Write a result for a job whose process died before ``train.run`` could (killed by the OS, timed out).

    Never for a config error: that is not a run, and a result file would list it among runs that did not finish.
    """
    result = RunResult(
        run_id=compute_run_id(cfg),
        task=str(OmegaConf.select(cfg, "task.name")),
        model=str(OmegaConf.select(cfg, "model.name")),
        method=str(OmegaConf.select(cfg, "method.name")),
        seed=int(cfg.seed),
        status=status,
        study=cfg.get("study"),
        error=error,
        config=OmegaConf.to_container(cfg, resolve=False),
        started_at=utc_now(),
        ended_at=utc_now(),
        provenance=provenance(),
    )
    if is_multirun():
        result.sweep_dir = str(Path(HydraConfig.get().sweep.dir).resolve())
        result.variant, result.search = search_context(cfg)
    return write_result(result, cfg.paths.results_dir)


def resume_enabled(cfg: DictConfig) -> bool:
    """Skip finished sweep points: in a multirun, unless `sweep.resume=false`."""
    return is_multirun() and bool(OmegaConf.select(cfg, "sweep.resume", default=True))


def finished_point(cfg: DictConfig, run_id: str) -> RunResult | None:
    """The finished result (same run id, status ok) a resumed sweep skips this point for, if any.

    A report stage (``${peftbench.chosen:...}``) finds its own ``tuned`` files. A tuned comparison whose search
    chose a method's own lr (factor 1) asks its report stage and its default
    stage for the same configuration at the same seeds: one run id. Whichever stage runs second finds the other's
    file and writes a copy under its own label (tuned, with its search record; or default) instead of training
    the same point twice (a re-run is bit-identical), so both rows exist.
    """
    if not resume_enabled(cfg):
        return None
    from peftbench.search import report_record

    results_dir = cfg.paths.results_dir
    done = find_ok_result(results_dir, run_id)
    record = report_record(cfg) if not OmegaConf.select(cfg, "sweep.search", default=None) else None
    if record is not None:  # a report stage: its own finished point is a `tuned` file
        own = find_ok_result(results_dir, run_id, variants=("tuned",))
        if own is not None:
            return own
    if done is not None and record is not None and done.variant == "default":
        return _relabelled(done, "tuned", record, results_dir)
    if done is None and record is None and not OmegaConf.select(cfg, "sweep.search", default=None):
        tuned = find_ok_result(results_dir, run_id, variants=("tuned",))
        if tuned is not None and (tuned.search or {}).get("sweeper") == "grid":
            return _relabelled(tuned, "default", None, results_dir)
    return done


def _relabelled(
    result: RunResult, variant: str, search: dict[str, Any] | None, results_dir: Any
) -> RunResult:
    copy = RunResult.from_dict({**result.to_dict(), "variant": variant, "search": search})
    copy.provenance = {**copy.provenance, "copied_from": result.filename}
    path = write_result(copy, results_dir)
    copy.provenance["result_path"] = str(path)
    logging.getLogger("peftbench").info(
        "%s: the same configuration and seed as %s; written as %s without training",
        variant,
        result.filename,
        path,
    )
    return copy


def objective(result: RunResult) -> float | None:
    """What a Hydra sweeper optimises: the validation monitor of the run's chosen checkpoint."""
    return next(iter(result.val_best.values()), None)


def keep_going(cfg: DictConfig) -> bool:
    """In a multirun, a failed job is recorded and the sweep goes on, unless `sweep.keep_going=false`."""
    return is_multirun() and bool(OmegaConf.select(cfg, "sweep.keep_going", default=True))


# --- how a sweep ends: failures for the summary, signals for the exit code ---------------------------------
# One line per job that did not finish ok, in this process: jobs of the basic launcher, and what the
# subprocess launcher's children report back. ``train.main`` prints them when the multirun ends and exits
# non-zero, so a sweep with failures never exits 0.
_failures: list[str] = []
_received: list[int] = []  # signals asked to stop this process, latest last


def failure_line(num: Any, overrides: Sequence[str], status: str, error: str) -> str:
    """One summary line for a job: which one (number, overrides), its status and why."""
    return f"job #{num} ({' '.join(overrides)}): {status}: {error}"


def note_failure(status: str, error: str) -> str:
    """Remember that this multirun job did not finish ok (status: failed, diverged, oom, killed, config error)."""
    hydra_cfg = HydraConfig.get()
    line = failure_line(hydra_cfg.job.num, list(hydra_cfg.overrides.task), status, error)
    _failures.append(line)
    return line


def add_failures(lines: Iterable[str]) -> None:
    """Failures reported by a job's own process (the subprocess launcher's children)."""
    _failures.extend(lines)


def failures() -> list[str]:
    return list(_failures)


def received_signal() -> int | None:
    """The signal that asked this process to stop (while ``stop_on_signals`` was active), if any."""
    return _received[-1] if _received else None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop the run as ``Interrupted`` (recorded ``killed``, exit 128 + the signal).

    Python's default SIGTERM ends the process on the spot (no result) and Lightning turns SIGTERM into a
    SystemExit with code 0. While Lightning fits, it wraps this handler in its own (it calls the handler it
    found); then the signal is only noted and Lightning stops at the next step, which is gentler than raising
    in the middle of one. Only the main thread can set handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _received.append(signum)
        if signal.getsignal(signum) is handler:  # not inside Lightning's wrapper: stop now
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# --- tuned selection ------------------------------------------------------------------------------------
def select_tuned(results: Iterable[RunResult]) -> list[RunResult]:
    """For each search (sweep x task x model x method x seed), the trial with the best *validation* score.

    The chosen trial is returned as a copy labelled ``tuned``, carrying the search budget (trials
    asked, trials finished ok) and the chosen trial's hyperparameters. Test scores never enter the
    choice; ties go to the earlier trial.
    """
    searches: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in results:
        # A grid search's choice is taken by its report stage (peftbench/search.py), at other seeds.
        if result.variant == "trial" and result.search and result.search.get("sweeper") != "grid":
            key = (result.search.get("sweep_dir"), result.task, result.model, result.method, result.seed)
            searches[key].append(result)
    chosen = []
    for trials in searches.values():
        scored = [(t, validation_score(t)) for t in trials if t.status == "ok"]
        scored = [(t, s) for t, s in scored if s is not None]
        if not scored:
            continue
        mode = scored[0][0].selection.get("mode", "max")
        sign = 1 if mode == "max" else -1
        best, _ = max(scored, key=lambda pair: (sign * pair[1], -int(pair[0].provenance.get("job_num") or 0)))
        tuned = RunResult.from_dict({**best.to_dict(), "variant": "tuned"})
        tuned.search = {
            **(best.search or {}),
            "trials_run": len(trials),
            "trials_ok": len(scored),
            "chosen_run_id": best.run_id,
            "chosen_overrides": best.provenance.get("overrides"),
            "rule": "best validation score",
        }
        chosen.append(tuned)
    return chosen
