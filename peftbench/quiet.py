"""A clean console: the one place that decides what a run keeps off it, and why.

A run prints what is the user's business: its configuration's consequences, its progress, its result, and any
warning about something the user can act on. What the libraries print about their own internals (a deprecated
API one library still calls in another), adverts, and a report of something the run does by design (a freshly
initialised task head) is not, and hides the lines that matter. Each entry below hides one message from one
module and says why; nothing is silenced wholesale (never ``warnings.simplefilter("ignore")``), so the same words
from another module, other words from the same module, and every warning of the user's own code still show.

What is kept off the console, and where (docs/sweeps.md, "A clean console", lists the same):

* ``WARNING_FILTERS``: Python warnings, by category, message and module (``warnings.filterwarnings``);
* ``LOG_FILTERS``: log records, by logger and message (a ``logging.Filter`` on that logger);
* Lightning's second console handler, when the root logger (Hydra's) already prints every Lightning line;
* ``hidden_datasets_bars``: ``datasets``' progress bars while small data is read and tokenised (seconds);
* ``hidden_transformers_bars``: the "Loading weights" bar of a small local checkpoint (well under a second);
* ``held_load_report``: transformers' load report, held back while peftbench decides whether it says anything
  beyond "the task head is new" (peftbench/models/backbone.py ``load_model``).

Lightning's "Found N module(s) in eval mode at the start of training" is not filtered: it was true (transformers'
``from_pretrained`` returns a model in eval mode and ``PeftBenchModule.on_train_start`` switched it to train mode
only after Lightning's check); the run now hands Lightning a module in train mode (peftbench/train.py), so the
warning stays live for a module that really is left in eval mode.

``install`` is called where a run is assembled (peftbench/assemble.py); it is idempotent. Nothing heavy is
imported here: ``datasets`` and ``transformers`` only inside the context managers that need them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Data this small is read and tokenised in seconds: a progress bar for it is noise. MR (4,000 rows, 0.6 MB),
# CoLA, RTE, MRPC are under these; QNLI, QQP, MNLI (100k-400k rows) keep their bars.
SMALL_DATA_ROWS = 50_000
SMALL_DATA_FILE_BYTES = 16 * 2**20
# A local checkpoint this small loads in about a second (MiniLM: 90 MB): its "Loading weights" bar is noise.
SMALL_CHECKPOINT_BYTES = 2**30
TRANSFORMERS_LOADER = "transformers.modeling_utils"  # the logger transformers' load report is written to
LOAD_REPORT = "LOAD REPORT"  # the words that start every load report (transformers/utils/loading_report.py)


@dataclass(frozen=True)
class WarningFilter:
    """One Python warning kept off the console: its category, the start of its message (a regex), and the module
    it is attributed to (a regex, anchored at both ends)."""

    category: type[Warning]
    message: str
    module: str
    why: str


@dataclass(frozen=True)
class LogFilter:
    """One log message kept off the console: the logger that writes it and a regex searched in the message."""

    logger: str
    message: str
    why: str


WARNING_FILTERS: tuple[WarningFilter, ...] = (
    WarningFilter(
        FutureWarning,
        r"`is_gradient_checkpointing` is deprecated",
        r"transformers\.modeling_utils\Z",
        # peft (peft_model.py) and peftbench's peft_tuner.py read the old property name; it works until v6.
        why="peft reads transformers' renamed property; nothing in the run or its config can change that",
    ),
    WarningFilter(
        FutureWarning,
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        r"lightning\.pytorch\.utilities\._pytree\Z",
        # Lightning's own use of a torch class torch deprecated; fixed in Lightning, not in user code.
        why="Lightning builds torch's deprecated LeafSpec internally; it is Lightning's to change",
    ),
)

LOG_FILTERS: tuple[LogFilter, ...] = (
    LogFilter(
        "lightning.pytorch.utilities.rank_zero",
        r"^💡 Tip: .*\[(litlogger|litmodels)\]",
        # An advert printed on every run without Lightning's cloud logger: it says nothing about this run.
        why="an advert for Lightning's cloud logger and model registry, printed whatever the run",
    ),
)


class MessageFilter(logging.Filter):
    """Drops a logger's records whose message matches one of ``patterns`` (searched); keeps every other one."""

    def __init__(self, patterns: Iterable[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report, not ours to hide
            return True
        return not any(pattern.search(message) for pattern in self.patterns)


def install() -> None:
    """Install every filter of this module (idempotent: a second call adds nothing)."""
    for entry in WARNING_FILTERS:
        # filterwarnings drops an identical earlier entry before adding: calling this per run adds one each.
        warnings.filterwarnings("ignore", message=entry.message, category=entry.category, module=entry.module)
    by_logger: dict[str, list[str]] = {}
    for log_entry in LOG_FILTERS:
        by_logger.setdefault(log_entry.logger, []).append(log_entry.message)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, MessageFilter)]:
            logger.removeFilter(old)
        logger.addFilter(MessageFilter(patterns))
    _print_lightning_lines_once()


def _print_lightning_lines_once() -> None:
    """Lightning adds a console handler of its own to the ``lightning`` logger (``lightning/__init__.py``) and
    still lets records propagate: under Hydra, whose root handler prints them too, every Lightning line showed
    twice ("INFO: Seed set to 42", then Hydra's "[...][lightning.fabric.utilities.seed][INFO] - Seed set to 42").
    Lightning's handler goes only when the root already prints to the console, so each line shows once, in
    Hydra's format, and still reaches Hydra's log file."""
    own = getattr(sys.modules.get("lightning"), "_console", None)
    if isinstance(own, logging.Handler) and _root_prints_to_console():
        logging.getLogger("lightning").removeHandler(own)


def _root_prints_to_console() -> bool:
    consoles = {id(stream) for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    return any(
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and id(handler.stream) in consoles
        for handler in logging.getLogger().handlers
    )


# --- progress bars of small work ------------------------------------------------------------------------------
def small_data(rows: int | None = None, file_bytes: int | None = None) -> bool:
    """Whether data of this size is read or tokenised in seconds (an unknown size is not small)."""
    if rows is not None:
        return rows <= SMALL_DATA_ROWS
    return file_bytes is not None and file_bytes <= SMALL_DATA_FILE_BYTES


@contextmanager
def hidden_datasets_bars(rows: int | None = None, file_bytes: int | None = None) -> Iterator[None]:
    """``datasets``' progress bars ("Generating train split", map, filter) off while small data is handled, then
    back as they were. ``HF_DATASETS_DISABLE_PROGRESS_BARS`` set either way is the user's choice and wins."""
    from datasets import config
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if (
        not small_data(rows, file_bytes)
        or config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None
        or are_progress_bars_disabled()
    ):
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


@contextmanager
def hidden_transformers_bars(hide: bool) -> Iterator[None]:
    """transformers' progress bars off while ``hide`` (a small local checkpoint loads), then back as they were.
    ``HF_HUB_DISABLE_PROGRESS_BARS`` or ``TRANSFORMERS_VERBOSITY`` set by the user are left to rule."""
    from transformers.utils import logging as hf_logging

    if not hide or not hf_logging.is_progress_bar_enabled() or os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


# --- transformers' load report -----------------------------------------------------------------------------
class HeldReport(logging.Filter):
    """Holds transformers' load report back; ``expected = True`` once the caller knows it says nothing the user
    must see (then it is dropped), otherwise it is printed as transformers wrote it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.expected = False

    def filter(self, record: logging.LogRecord) -> bool:
        if LOAD_REPORT not in record.getMessage():
            return True
        self.records.append(record)
        return False


@contextmanager
def held_load_report() -> Iterator[HeldReport]:
    """Around ``from_pretrained``: its load report waits until the block ends, and is then printed unless the
    block set ``held.expected`` (also printed when the block raises: a failed load's report explains it)."""
    logger = logging.getLogger(TRANSFORMERS_LOADER)
    held = HeldReport()
    logger.addFilter(held)
    try:
        yield held
    except BaseException:
        held.expected = False
        raise
    finally:
        logger.removeFilter(held)
        if not held.expected:
            for record in held.records:
                logger.handle(record)
