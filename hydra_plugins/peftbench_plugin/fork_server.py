"""A fork server for sweep jobs: the libraries every run imports are imported once, and each job is a fork.

Why: a sweep job started as a fresh interpreter spends ~8 s (2 idle CPU cores) importing torch, Lightning,
transformers, peft and datasets before its run starts; a 273-trial study pays that 273 times. Here one
server process imports them once (``PRELOAD``) and forks a copy of itself per job. The
fork keeps what ``SubprocessLauncher`` is for: each job is its own process (its own peak memory, measured
by resetting the kernel's high-water mark), the OS may kill it without ending the sweep, and it runs in its
own process group, so the launcher signals it and whatever it starts exactly as before.

Neither multiprocessing's ``forkserver`` nor ``concurrent.futures`` fits: they hand back a function's return
value, not an exit status, they do not give the job its own process group, and a worker killed by the OS
breaks the whole pool.

Protocol (JSON lines on two pipes that are not stdout, which the jobs' logs share):
  launcher -> server  {"job": N, "argv": [...], "cwd": ..., "env": {...}}   fork a job
  server -> launcher  {"ready": true, "unsafe": null|reason}                 once, after the imports
                      {"job": N, "pid": P}                                   the job's process
                      {"pid": P, "code": C}                                  it ended (C: Popen's returncode)
The server reaps its children (only a parent can read an exit status) and sends each status on. When the
launcher closes its pipe, the server waits for the jobs still running and exits.

What a fork cannot share, the launcher keeps for a fresh interpreter (``needs_fresh_interpreter``): a job
that needs bitsandbytes (the server keeps it unimported, peftbench/imports.py), and multi-process
strategies, whose extra ranks Lightning starts by re-running the command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# What every peftbench run imports before its first step (bench/startup.py: "libraries a run needs").
PRELOAD = ("torch", "lightning", "transformers", "peft", "datasets", "peftbench.assemble")
JOB_CHILD = str(Path(__file__).with_name("job_child.py"))
# The server is started with ``python -c``: it first takes the launcher's sys.path, so that it imports the
# same checkout as the launcher (an installed copy could otherwise shadow a worktree).
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from hydra_plugins.peftbench_plugin.fork_server import serve; "
    "serve(json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
)


def needs_fresh_interpreter(task_cfg: DictConfig) -> str | None:
    """Why this job cannot be a fork of the server (None: it can)."""
    from peftbench.imports import needs_bitsandbytes

    if needs_bitsandbytes(task_cfg):
        return "it needs bitsandbytes, which the fork server keeps unimported"
    trainer = OmegaConf.select(task_cfg, "trainer", default=None) or {}
    strategy = str(trainer.get("strategy", "auto") or "auto")
    if strategy not in ("auto", "single_device"):
        return f"trainer.strategy={strategy} starts its ranks by re-running the command"
    for key in ("devices", "num_nodes"):
        if str(trainer.get(key, 1)) != "1":
            return f"trainer.{key}={trainer.get(key)} may start several ranks"
    return None


class ForkServerError(RuntimeError):
    """The server could not start, or ended: the launcher goes on with fresh interpreters."""


class ForkServer:
    """The launcher's side: starts the server, forks jobs through it, waits for their exit codes."""

    def __init__(self, preload: Sequence[str] = PRELOAD, startup_timeout_s: float = 600.0) -> None:
        to_server_r, self._to_server = os.pipe()
        self._from_server, from_server_w = os.pipe()
        env = {**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}  # asking for GPUs must not initialise CUDA
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BOOT,
                json.dumps(sys.path),
                json.dumps(list(preload)),
                str(to_server_r),
                str(from_server_w),
            ],
            pass_fds=(to_server_r, from_server_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the jobs through the launcher only
            env=env,
        )
        os.close(to_server_r)
        os.close(from_server_w)
        self._closed = False
        self._lock = threading.Lock()  # one writer at a time on the request pipe
        self._changed = threading.Condition()
        self._pids: dict[int, int] = {}  # job number -> pid
        self._codes: dict[int, int] = {}  # pid -> exit code
        self._alive = True
        self._ready = threading.Event()
        self._unsafe: str | None = None
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(startup_timeout_s) or not self._alive:
            self.close()
            raise ForkServerError("the fork server did not start (its error, if any, is above)")
        if self._unsafe is not None:
            self.close()
            raise ForkServerError(self._unsafe)

    def _read(self) -> None:
        buffer = b""
        with open(self._from_server, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._handle(json.loads(line))
        with self._changed:  # the server ended: no further status can come
            self._alive = False
            self._changed.notify_all()
        self._ready.set()

    def _handle(self, message: dict) -> None:
        if message.get("ready"):
            self._unsafe = message.get("unsafe")
            self._ready.set()
            return
        with self._changed:
            if "job" in message:
                self._pids[message["job"]] = message["pid"]
            else:
                self._codes[message["pid"]] = message["code"]
            self._changed.notify_all()

    def start(self, job: int, argv: Sequence[str], env: dict[str, str]) -> ForkedJob:
        """Fork job ``job`` running ``job_child argv`` in this process's folder with environment ``env``
        (variables read at import, such as OMP_NUM_THREADS, keep the values the server started with)."""
        request = {"job": job, "argv": list(argv), "cwd": os.getcwd(), "env": env}
        with self._lock:
            try:
                os.write(self._to_server, json.dumps(request).encode() + b"\n")
            except OSError as error:
                raise ForkServerError(f"the fork server is gone ({error})") from error
        with self._changed:
            self._changed.wait_for(lambda: job in self._pids or not self._alive)
            if job not in self._pids:
                raise ForkServerError("the fork server ended before it forked the job")
            return ForkedJob(self, self._pids.pop(job))

    def wait(self, pid: int, timeout: float | None) -> int | None:
        """The job's exit code (Popen's convention: -N for signal N); None when the server ended first."""
        with self._changed:
            if not self._changed.wait_for(lambda: pid in self._codes or not self._alive, timeout):
                raise subprocess.TimeoutExpired(JOB_CHILD, timeout or 0.0)
            return self._codes.pop(pid, None)

    def close(self) -> None:
        """No more jobs: the server waits for those still running, then exits. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self._to_server)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a job still running past the sweep: leave it its server
            log.warning("fork server still waiting for a job after the sweep ended")
        self._reader.join(timeout=5)


class ForkedJob:
    """A job forked by the server: what the launcher needs of a Popen (its pid, its exit code)."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid

    def wait(self, timeout: float | None = None) -> int | None:
        return self.server.wait(self.pid, timeout)


# ----- the server process ---------------------------------------------------------------------------------


def serve(preload: Sequence[str], requests_fd: int, replies_fd: int) -> None:
    """The server's main loop. It starts no Python thread and computes nothing: a fork copies only the
    thread that forks, so the server must hold no lock another thread could own (the libraries' own idle
    threads and jemalloc handle fork themselves, as for DataLoader workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher forwards signals to the jobs themselves
    from peftbench.imports import keep_bitsandbytes_out

    keep_bitsandbytes_out()  # as a run that does not quantise would (imports.gate_bitsandbytes)
    import importlib

    # Lightning gives its loggers their own stderr handler when it is imported before logging has any (and then
    # they bypass the job's log file). A fresh job imports it after Hydra configured logging; so should we.
    placeholder = logging.NullHandler()
    logging.getLogger().addHandler(placeholder)
    for name in preload:
        importlib.import_module(name)
    logging.getLogger().removeHandler(placeholder)
    _send(replies_fd, {"ready": True, "unsafe": _fork_unsafe()})
    running: set[int] = set()
    buffer, open_ = b"", True
    while open_ or running:
        readable = select.select([requests_fd], [], [], 0.1)[0] if open_ else []
        if open_ and readable:
            chunk = os.read(requests_fd, 1 << 20)
            if not chunk:
                open_ = False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = _fork_job(request, requests_fd, replies_fd)
                running.add(pid)
                _send(replies_fd, {"job": request["job"], "pid": pid})
        elif not open_:
            with contextlib.suppress(ChildProcessError):  # nothing more to read: block until a job ends
                pid, status = os.waitpid(-1, 0)
                running.discard(pid)
                _send(replies_fd, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})
        while running:  # every job that has ended since
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                running.clear()
                break
            if pid == 0:
                break
            running.discard(pid)
            _send(replies_fd, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork_unsafe() -> str | None:
    """A reason not to fork, when the imports did what a fork cannot copy (an initialised CUDA context)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "importing the libraries initialised CUDA, which a forked process cannot use"
    return None


def _send(fd: int, message: dict) -> None:
    # A launcher that was killed reads no more: the server still reaps its jobs, then ends quietly.
    with contextlib.suppress(BrokenPipeError):
        os.write(fd, json.dumps(message).encode() + b"\n")


def _fork_job(request: dict, requests_fd: int, replies_fd: int) -> int:
    pid = os.fork()
    if pid:
        with contextlib.suppress(OSError):  # also set in the child: whichever runs first, no signal is lost
            os.setpgid(pid, pid)
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        os.close(requests_fd)
        os.close(replies_fd)
        code = _run_job(request)
    except BaseException:  # before the job ran (its own failures are handled in _run_job)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _run_job(request: dict) -> int:
    """In the forked child: become what ``python -m ...job_child ARGV`` would be, run, exit as it would."""
    import atexit
    import traceback

    for signum in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [JOB_CHILD, *request["argv"]]
    from hydra_plugins.peftbench_plugin.subprocess_launcher import child_main

    code = 0
    try:
        child_main(request["argv"])
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter does at exit, in its order
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code
