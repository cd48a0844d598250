"""A Hydra launcher that runs every sweep job in its own fresh Python process (peftbench's default).

Why our own: a benchmark sweep needs (1) the peak memory of each job, not of the sweep so far,
and (2) a job the OS kills (CPU out-of-memory: SIGKILL) to be recorded while the sweep goes on.
Hydra's basic launcher runs jobs in its own process (a kill ends the whole sweep);
hydra-joblib-launcher reuses worker processes (one job's peak memory carries into the next) and
aborts the sweep when a worker dies; submitit's local mode starts all jobs at once. This launcher
stays small: the parent composes each job's config exactly as the basic launcher does, pickles it
with Hydra's context to a file and starts ``python -m hydra_plugins.peftbench_plugin.job_child``,
which calls Hydra's own ``run_job``. A job whose process dies without answering gets a result
file with status ``killed`` (or a timeout) written by the parent, and the sweep continues. A point
whose result is already there with status ok is skipped by the parent without starting a process.

By default the jobs are forks of a server process that imported torch, Lightning, transformers, peft and
datasets once (``fork_server: true``, fork_server.py): a job then starts in well under a second instead of ~8 s.
Jobs a fork cannot run (bitsandbytes, multi-process strategies) and every job after the server failed get a
fresh interpreter, as with ``fork_server: false``.

Each job runs in its own process group. SIGTERM or SIGINT (Ctrl-C) to the parent is forwarded to the running
jobs' groups; the parent waits for them (they record ``killed``), starts no further job and exits 128 + the
signal. A second signal sends SIGKILL. Failures the children report (config errors, failed runs) come back
with their answers, so ``peftbench-train`` can list them when the sweep ends and exit non-zero.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.peftbench_plugin.fork_server import (
    ForkedJob,
    ForkServer,
    ForkServerError,
    needs_fresh_interpreter,
)
from peftbench.sweeps import FORKED, FRESH, JOB_START_ENV

log = logging.getLogger(__name__)


@dataclass
class SubprocessLauncherConf:
    _target_: str = "hydra_plugins.peftbench_plugin.subprocess_launcher.SubprocessLauncher"
    max_parallel: int = 1  # jobs running at once (each in its own process)
    timeout_s: float | None = None  # a job running longer is killed and recorded as killed
    fork_server: bool = True  # jobs fork from a process that imported the libraries once


ConfigStore.instance().store(
    group="hydra/launcher", name="peftbench_subprocess", node=SubprocessLauncherConf, provider="peftbench"
)


def task_reference(task_function: TaskFunction) -> tuple[str | None, str, str]:
    """(module, file, name) from which a fresh process re-imports the task function."""
    module = task_function.__module__
    file = getattr(sys.modules.get(module), "__file__", None) or ""
    if module == "__main__":  # `python -m pkg.mod` knows its real name; a script only its path
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else None
    return module, os.path.abspath(file) if file else "", task_function.__qualname__


class SubprocessLauncher(Launcher):
    def __init__(
        self, max_parallel: int = 1, timeout_s: float | None = None, fork_server: bool = True
    ) -> None:
        self.max_parallel = max(1, int(max_parallel))
        self.timeout_s = timeout_s
        self.fork_server = bool(fork_server)
        self._server: ForkServer | None = None  # started by the first job that can use it
        self._server_failed = False
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._stop_signal: int | None = None  # set when the parent was asked to stop
        self._live: dict[int, subprocess.Popen | ForkedJob] = {}  # running jobs by pid (= process group)
        self._lock = threading.Lock()
        self._server_lock = threading.Lock()  # one fork server is started, whatever max_parallel

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        how = "forked from one server where they can" if self.fork_server else "each in a fresh interpreter"
        log.info(f"Launching {len(job_overrides)} jobs, each in its own process ({how})")
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            jobs.append((idx, list(overrides), sweep_config))
        # The fork server outlives this call: a sweeper that asks for its trials in batches (Optuna) calls
        # launch once per batch, and each would otherwise import the libraries again. It ends with this process.
        with self._forwarding_signals(), ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            returns = list(pool.map(lambda job: self._run_one(*job), jobs))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if self._stop_signal is not None:
            from peftbench.errors import Interrupted

            log.error(f"sweep stopped by {signal.Signals(self._stop_signal).name}")
            raise Interrupted(self._stop_signal)
        return returns

    @contextlib.contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """While jobs run, SIGTERM/SIGINT to this process go to every running job's process group.

        The jobs run in their own groups (so a signal reaches their DDP ranks and loader workers, and a
        terminal's Ctrl-C reaches them only through here, once); without forwarding, killing the parent
        would leave its running job going unsupervised.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        again = self._stop_signal is not None
        self._stop_signal = signum
        forward = signal.SIGKILL if again else signum  # a second signal does not wait any longer
        with self._lock:
            live = list(self._live.values())
        log.error(
            f"{signal.Signals(signum).name}: stopping {len(live)} running job(s) with {signal.Signals(forward).name}"
        )
        for process in live:
            _signal_group(process, forward)

    def _run_one(self, idx: int, overrides: list[str], sweep_config: DictConfig) -> JobReturn:
        finished = self._finished(idx, overrides, sweep_config)
        if finished is not None:
            return finished
        with tempfile.TemporaryDirectory(prefix=f"peftbench-job{idx}-") as folder:
            payload, answer = Path(folder) / "job.pkl", Path(folder) / "return.pkl"
            with payload.open("wb") as handle:
                pickle.dump(
                    {
                        "hydra_context": self.hydra_context,
                        "config": sweep_config,
                        "task": task_reference(self.task_function),
                        "sys_path": sys.path,
                        # Hydra's singletons without OmegaConf's resolvers (closures do not pickle;
                        # the child registers them again on import).
                        "singletons": Singleton.get_state()["instances"],
                    },
                    handle,
                )
            code, reason = self._start_and_wait(idx, [str(payload), str(answer)], sweep_config)
            if code is None:  # the sweep was stopped before this job started
                ret = JobReturn(
                    overrides=overrides, cfg=sweep_config, task_name=str(sweep_config.hydra.job.name)
                )
                ret.status, ret.return_value = (
                    JobStatus.FAILED,
                    RuntimeError("not started: the sweep was stopped"),
                )
                return ret
            if answer.is_file():
                with answer.open("rb") as handle:
                    reply = pickle.load(handle)
                return self._answered(idx, overrides, sweep_config, reply)
        return self._record_dead(idx, overrides, sweep_config, code, reason)

    def _start_and_wait(
        self, idx: int, argv: list[str], sweep_config: DictConfig
    ) -> tuple[int | None, str | None]:
        """Run ``job_child argv`` (forked, or a fresh interpreter): (exit code, why it was killed); (None, None)
        when the sweep stopped before the job started."""
        server = self._server_for(idx, sweep_config)
        with self._lock:
            if self._stop_signal is not None:
                return None, None
            process: subprocess.Popen | ForkedJob | None = None
            if server is not None:
                try:
                    process = server.start(idx, argv, {**os.environ, JOB_START_ENV: FORKED})
                except ForkServerError as error:
                    self._give_up_server(str(error))
            if process is None:
                command = [sys.executable, "-m", "hydra_plugins.peftbench_plugin.job_child", *argv]
                env = {**os.environ, JOB_START_ENV: FRESH}
                process = subprocess.Popen(command, start_new_session=True, env=env)  # its own process group
            self._live[process.pid] = process
        try:
            code, reason = process.wait(timeout=self.timeout_s), None
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)  # the job and whatever it started
            process.wait()
            code, reason = -signal.SIGKILL, f"timed out after {self.timeout_s} s"
        finally:
            with self._lock:
                self._live.pop(process.pid, None)
        if code is None:  # a forked job whose server ended first: nobody can read its status any more
            _signal_group(process, signal.SIGKILL)
            self._give_up_server("it ended while a job ran")
            code, reason = -signal.SIGKILL, "its fork server ended while it ran"
        return code, reason

    def _server_for(self, idx: int, sweep_config: DictConfig) -> ForkServer | None:
        """The fork server, started on first use, for a job it can run; None: a fresh interpreter."""
        if not self.fork_server or self._server_failed or self._stop_signal is not None:
            return None
        try:
            why = needs_fresh_interpreter(_task_config(sweep_config))
        except Exception as error:  # a config that does not resolve: its own process reports it
            why = f"its config did not resolve here ({type(error).__name__})"
        if why is not None:
            log.info(f"#{idx} runs in a fresh interpreter: {why}")
            return None
        with self._server_lock:  # not self._lock: the signal handler must not wait for the server's imports
            if self._server is None and not self._server_failed:
                log.info("starting the fork server (it imports torch, Lightning, transformers, peft once)")
                try:
                    self._server = ForkServer()
                    atexit.register(self._server.close)  # waits for its jobs (all done by then), then ends it
                except (ForkServerError, OSError) as error:
                    self._give_up_server(str(error))
            return self._server

    def _give_up_server(self, why: str) -> None:
        if not self._server_failed:
            log.warning(f"fork server: {why}; the remaining jobs start fresh interpreters")
        self._server_failed = True

    def _answered(self, idx: int, overrides: list[str], sweep_config: DictConfig, reply: dict) -> JobReturn:
        """The job's own answer: its return value, or how it failed; its failures join this sweep's list."""
        from peftbench import sweeps

        lines = list(reply.get("failures") or [])
        if reply["status"] != "completed" and not lines:
            lines = [sweeps.failure_line(idx, overrides, "failed", str(reply["value"]))]
        sweeps.add_failures(lines)
        ret = JobReturn(
            overrides=overrides,
            cfg=sweep_config,
            working_dir=reply.get("working_dir"),
            task_name=reply.get("task_name") or str(sweep_config.hydra.job.name),
        )
        keep_going = bool(OmegaConf.select(sweep_config, "sweep.keep_going", default=True))
        if reply["status"] == "completed":
            ret.status, ret.return_value = JobStatus.COMPLETED, reply["value"]
        elif reply["status"] == "exit" and keep_going:  # stopped by a signal: recorded killed by the job
            ret.status, ret.return_value = JobStatus.COMPLETED, math.nan
        else:
            ret.status, ret.return_value = JobStatus.FAILED, RuntimeError(reply["value"])
        return ret

    def _finished(self, idx: int, overrides: list[str], sweep_config: DictConfig) -> JobReturn | None:
        """A finished sweep point (same run id, status ok) is skipped here, before any process starts:
        a fresh process only to find its result spends ~13 s importing torch and friends on 2 CPU cores,
        which is minutes on a resumed 60-point sweep. Anything unusual is left to the job itself."""
        from peftbench import sweeps
        from peftbench.results import compute_run_id

        HydraConfig.instance().set_config(sweep_config)
        try:
            task_cfg = _task_config(sweep_config)
            done = sweeps.finished_point(task_cfg, compute_run_id(task_cfg))
        except Exception:  # a broken config: the job's own process reports it (as a failed result)
            return None
        if done is None:
            return None
        log.info(f"#{idx} skipped: finished result {done.filename} (sweep.resume=false re-runs)")
        ret = JobReturn(overrides=overrides, cfg=sweep_config, task_name=str(sweep_config.hydra.job.name))
        ret.status, ret.return_value = (
            JobStatus.COMPLETED,
            sweeps.objective(done),
        )  # what the job would return
        return ret

    def _record_dead(
        self, idx: int, overrides: list[str], sweep_config: DictConfig, code: int, reason: str | None
    ) -> JobReturn:
        """The job's process ended without answering: write its result (killed, or failed) from here."""
        from peftbench import sweeps

        status = "killed" if code < 0 else "failed"
        if reason is None:
            if code < 0:
                name = signal.Signals(-code).name
                hint = " (the OS out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
                reason = f"process killed by {name}{hint}"
            else:
                reason = f"process exited with code {code} before finishing"
        HydraConfig.instance().set_config(sweep_config)
        error = f"job #{idx}: {reason}"
        sweeps.add_failures([sweeps.failure_line(idx, overrides, status, reason)])
        try:
            path = sweeps.record_failure(_task_config(sweep_config), status, error)
            log.error(f"{error}; recorded in {path}")
        except Exception as failure:  # a broken config must not hide the kill itself
            log.error(f"{error}; could not record it: {failure}")
        keep_going = bool(OmegaConf.select(sweep_config, "sweep.keep_going", default=True))
        ret = JobReturn(overrides=overrides, cfg=sweep_config, task_name=str(sweep_config.hydra.job.name))
        if keep_going:
            ret.status, ret.return_value = (
                JobStatus.COMPLETED,
                math.nan,
            )  # a sweeper reads NaN as a failed trial
        else:
            ret.status, ret.return_value = JobStatus.FAILED, RuntimeError(error)
        return ret


def _signal_group(process: subprocess.Popen | ForkedJob, signum: int) -> None:
    """Send a signal to a job's process group (it may have ended meanwhile)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _write_answer(answer_path: Path, answer: dict) -> None:
    tmp = answer_path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        pickle.dump(answer, handle)
    os.replace(tmp, answer_path)


def _task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's config as the task sees it (Hydra's own node removed, like run_job does)."""
    task_cfg = OmegaConf.create(OmegaConf.to_container(sweep_config, resolve=False))
    with open_dict(task_cfg):
        task_cfg.pop("hydra", None)
    return task_cfg


def child_main(argv: Sequence[str]) -> None:
    """Entry point of the job's process (see job_child.py)."""
    import importlib
    import importlib.util

    from hydra.core.utils import run_job

    payload_path, answer_path = Path(argv[0]), Path(argv[1])
    with payload_path.open("rb") as handle:
        payload = pickle.load(handle)
    for entry in reversed(payload["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Only the process the launcher started answers, not the extra ranks a DDP strategy re-executes.
    owner = os.environ.get("PEFTBENCH_JOB_OWNER") in (None, "", str(os.getpid()))
    os.environ["PEFTBENCH_JOB_OWNER"] = os.environ.get("PEFTBENCH_JOB_OWNER") or str(os.getpid())

    # Test-only: SIGKILL the job whose overrides include all of these (joined by '&'), as the OOM killer would.
    kill_marker = os.environ.get("PEFTBENCH_TEST_KILL_JOB")
    overrides = list(payload["config"].hydra.overrides.task)
    if kill_marker and all(part in overrides for part in kill_marker.split("&")):
        os.kill(os.getpid(), signal.SIGKILL)
    # Test-only: a forked job whose overrides include these SIGKILLs its fork server, then waits to be stopped.
    server_marker = os.environ.get("PEFTBENCH_TEST_KILL_FORK_SERVER")
    forked = os.environ.get(JOB_START_ENV) == FORKED
    if forked and server_marker and all(part in overrides for part in server_marker.split("&")):
        os.kill(os.getppid(), signal.SIGKILL)
        signal.pause()

    from hydra.core.plugins import Plugins

    Singleton._instances = payload["singletons"]
    Plugins.instance()  # rediscovered, as Singleton.set_state does
    setup_globals()
    module_name, file, name = payload["task"]
    if module_name:
        module = importlib.import_module(module_name)
    else:  # started as a script: load it under another name so its `if __name__ == "__main__"` stays idle
        spec = importlib.util.spec_from_file_location("_peftbench_task_main", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    task_function = getattr(module, name)
    task_function = getattr(task_function, "__wrapped__", task_function)  # undo @hydra.main
    from peftbench import sweeps

    try:
        ret = run_job(
            hydra_context=payload["hydra_context"],
            task_function=task_function,
            config=payload["config"],
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except (
        SystemExit
    ) as stop:  # stopped by a signal (128 + N; the run recorded `killed`) or a config error (2)
        if owner:
            answer = {"status": "exit", "value": f"job exited with code {stop.code}", "code": stop.code}
            _write_answer(answer_path, {**answer, "failures": sweeps.failures()})
        raise
    # Hydra's JobReturn holds structured-config objects that do not pickle: send back what a sweeper reads.
    if ret.status == JobStatus.COMPLETED:
        answer = {"status": "completed", "value": ret._return_value}
    else:
        error = ret._return_value
        answer = {"status": "failed", "value": f"{type(error).__name__}: {error}"}
    answer.update(working_dir=ret.working_dir, task_name=ret.task_name, failures=sweeps.failures())
    if owner:
        _write_answer(answer_path, answer)
    return ret
