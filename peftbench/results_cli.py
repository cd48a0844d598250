"""``peftbench-results``: maintenance of result folders.

``peftbench-results portable DIR`` rewrites result files written before paths were recorded portably (or on
another machine) so they carry no machine-local absolute path: a path under a project folder becomes
``./...``, one under a package folder ``<peftbench>/...``, one under the home folder ``~/...``. The run id,
the configuration fingerprint and every number stay as they are (the command checks both per file and
refuses to write a file whose fingerprint would change); files that are not results are left alone.

``peftbench-results status OVERRIDES`` says which points of a sweep (the overrides of a ``peftbench-train -m``
command) already have a result, per method, and what the rest would cost (peftbench/status.py).

``peftbench-results export DIR --format peft-mc --out OUT`` writes every result under DIR (search trials
excepted) as one file in another benchmark's schema: ``peft-mc`` is HF peft's method comparison, laid out as
theirs (``OUT/TASK/results/METHOD--MODEL-FINGERPRINT--seedS-RUNID.json``). docs/interop.md has the mapping.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from peftbench import console
from peftbench.console import entry_point
from peftbench.errors import ConfigError
from peftbench.imports import keep_bitsandbytes_out
from peftbench.results import (
    HOME_TOKEN,
    PACKAGE_TOKEN,
    PROJECT_TOKEN,
    RunResult,
    _jsonable,
    _write_atomically,
    config_fingerprint,
    portable,
    scan_results,
    skip_lines,
)


def make_portable(
    results_dir: Path, projects: Sequence[Path], packages: Sequence[Path], home: Path, dry_run: bool = False
) -> tuple[int, int, list[str]]:
    """(files rewritten, files already portable, problems). Longest anchor first, as when writing."""
    anchors = sorted(
        [
            *((str(p).rstrip("/"), PROJECT_TOKEN) for p in projects),
            *((str(p).rstrip("/"), PACKAGE_TOKEN) for p in packages),
            (str(home).rstrip("/"), HOME_TOKEN),
        ],
        key=lambda item: -len(item[0]),
    )
    loaded, skipped = scan_results(results_dir)
    rewritten, unchanged, problems = 0, 0, skip_lines(skipped)
    for path, result in loaded:
        before = json.loads(path.read_text(encoding="utf-8"))
        after = portable(before, anchors)
        if after == before:
            unchanged += 1
            continue
        moved = RunResult.from_dict(after)
        if config_fingerprint(moved) != config_fingerprint(result) or moved.run_id != result.run_id:
            problems.append(f"{path}: its configuration fingerprint would change; left as it is")
            continue
        if not dry_run:
            _write_atomically(json.dumps(_jsonable(after), indent=2, allow_nan=False) + "\n", path)
        rewritten += 1
    return rewritten, unchanged, problems


EXPORT_FORMATS = ("peft-mc",)  # schemas `export --format` writes (peftbench/interop/)


def export_main(results_dir: Path, out_dir: Path) -> int:
    """``export``: one file per result, a warning line per file not read; 1 when nothing was written."""
    from peftbench.interop import peft_mc

    report = peft_mc.export(results_dir, out_dir)
    for line in report.problems:
        print(f"warning: {line}", file=sys.stderr)
    trials = f"; left out {report.trials} search trial(s)" if report.trials else ""
    print(
        f"wrote {len(report.written)} peft-mc file(s) under {out_dir}{trials}; {len(report.problems)} skipped"
    )
    return 0 if report.written else 1


EXAMPLES = (
    "peftbench-results portable results/ --dry-run  # count committed files with machine-local paths",
    "peftbench-results export results/cpu_minilm_mr/runs --format peft-mc --out /tmp/peft-mc",
    "peftbench-results status experiments=compare/tuned/search method=lora,pfeiffer  # which points are done",
)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = console.parser("peftbench-results", __doc__.splitlines()[0], EXAMPLES)
    commands = parser.add_subparsers(dest="command", required=True)
    tool = commands.add_parser("portable", help="rewrite machine-local absolute paths in result files")
    tool.add_argument("results_dir", type=Path, help="folder of result JSON files (searched recursively)")
    tool.add_argument(
        "--project",
        type=Path,
        action="append",
        default=[],
        help="a launch folder the runs were started from (repeatable; default: the current folder)",
    )
    tool.add_argument(
        "--package",
        type=Path,
        action="append",
        default=[],
        help="a peftbench package folder the runs imported (repeatable; default: <project>/peftbench)",
    )
    tool.add_argument("--home", type=Path, default=Path.home(), help="the home folder the runs saw")
    tool.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
    exporter = commands.add_parser("export", help="write the results in another benchmark's schema")
    exporter.add_argument("results_dir", type=Path, help="folder of result JSON files (searched recursively)")
    exporter.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="peft-mc",
        help="the schema (peft-mc: HF peft's method_comparison)",
    )
    exporter.add_argument("--out", type=Path, required=True, help="folder the files are written under")
    status = commands.add_parser(
        "status", help="which points of a sweep have a result (the overrides of a peftbench-train -m command)"
    )
    status.add_argument("overrides", nargs="+", help="e.g. experiments=compare/tuned/search method=lora,ia3")
    status.add_argument("--by", metavar="KEY", help="count per value of this swept key (default: method)")
    status.add_argument(
        "--list", action="store_true", help="also list every point that is not ok, one a line"
    )
    args = parser.parse_args(argv)
    if args.command == "status":
        return status_main(args.overrides, args.by, args.list)
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a folder")
    if args.command == "export":
        keep_bitsandbytes_out()  # peft's registry is read, nothing is quantised
        return export_main(args.results_dir, args.out)
    projects = args.project or [Path.cwd()]
    packages = args.package or [project / "peftbench" for project in projects]
    rewritten, unchanged, problems = make_portable(
        args.results_dir, projects, packages, args.home, args.dry_run
    )
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    verb = "would rewrite" if args.dry_run else "rewrote"
    print(f"{verb} {rewritten} result file(s); {unchanged} already portable; {len(problems)} problem(s)")
    return 1 if any("fingerprint" in line for line in problems) else 0


def status_main(overrides: Sequence[str], by: str | None, listing: bool) -> int:
    """Print the sweep's table of finished points; 2 for a command line that does not compose."""
    from peftbench import hydra_errors, status

    terminal = sys.stderr.isatty()

    def progress(number: int, total: int) -> None:
        # A counter rewritten in place on a terminal; in a log (no terminal, no \r) only the last line.
        if number == total or (terminal and number % 10 == 0):
            print(f"\rcomposed {number}/{total} points", end="\n" if number == total else "", file=sys.stderr)

    try:
        _, points = status.study_status(overrides, progress)
    except hydra_errors.HYDRA_ERRORS as error:
        print(
            f"peftbench-results status: {hydra_errors.describe(error, list(overrides)) or error}",
            file=sys.stderr,
        )
        return 2
    except ConfigError as error:
        print(f"peftbench-results status: {error}", file=sys.stderr)
        return 2
    print(f"peftbench-train -m {' '.join(overrides)}: {len(points)} point(s)\n")
    print(status.status_table(points, by))
    if listing:
        for point in points:
            if point.state != "ok":
                run = point.run_id or "-"
                print(
                    f"{point.state:>8}  {run}  {' '.join(point.overrides)}{'  (' + point.why + ')' if point.why else ''}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
