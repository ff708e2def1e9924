"""What a result was made from: the base's content hash, the environment (Python, platform, package versions) and
the commit of adapterbench's own code."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from adapterbench.digest import bytes_sha256, file_sha256

PACKAGE_DIR = Path(__file__).resolve().parent  # the adapterbench package that is running
PACKAGES = ("adapterbench", "torch", "transformers", "peft", "bitsandbytes", "lm_eval", "accelerate")


def base_sha(path: Path) -> str:
    """Name the base by its content: config.json and the sha256 of each weight file (hashed once, then remembered by
    path, size and mtime), so two bases of one architecture with different weights never share a name."""
    # config.json's bytes as they are (not decoded text): the value is in every training manifest, so it must not move
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return bytes_sha256((path / "config.json").read_bytes()
                        + "".join(f"{w.name}:{file_sha256(w)}" for w in weights).encode())


def environment() -> dict:
    """Python, platform and the versions of the packages that move scores (None for one not installed)."""
    import importlib.metadata as md

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


def git_commit() -> str | None:
    """The commit of the git checkout adapterbench runs from (whatever the working directory), or None when it is
    not run from one (an installed wheel, no git)."""
    try:
        # HEAD:./__init__.py resolves only if this package is in that checkout's HEAD: an installed adapterbench in
        # a virtualenv inside some other repository gets None, not that repository's commit
        out = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "HEAD", "HEAD:./__init__.py"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None
