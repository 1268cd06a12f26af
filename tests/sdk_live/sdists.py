"""Fetch the SDK source distributions (and the suites' extra packages) into a git-ignored cache.

Everything is downloaded at test time with pip and kept under ``.cache/sdists`` (override with
``HUBBUB_SDK_CACHE``); once cached, no network is needed. Nothing here is committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.sdk_live.suites import EXTRA_REQUIREMENTS, Suite

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    path = Path(os.environ.get("HUBBUB_SDK_CACHE") or REPO_ROOT / ".cache" / "sdists")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Serialise downloads between concurrent test runs sharing the cache."""
    with open(cache / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_sdist(cache: Path, suite: Suite) -> Path | None:
    for path in sorted(cache.glob("*.tar.gz")):
        name, _, version = path.name.removesuffix(".tar.gz").rpartition("-")
        if _normalize(name) == _normalize(suite.package) and version == suite.version:
            return path
    return None


def _pip(*args: str, timeout: float = 900) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _download(cache: Path, suite: Suite) -> Path:
    found = _find_sdist(cache, suite)
    if found is None:
        requirement = f"{suite.package}=={suite.version}"
        _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", requirement, "-d", str(cache))
        found = _find_sdist(cache, suite)
        if found is None:
            raise RuntimeError(f"pip download left no sdist for {requirement} in {cache}")
    return found


def _extract(sdist: Path, dest_root: Path) -> Path:
    target = dest_root / sdist.name.removesuffix(".tar.gz")
    marker = target / ".hubbub-extracted"
    if marker.exists():
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_root))
    try:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (top,) = list(tmp.iterdir())  # an sdist holds exactly one top-level folder
        if target.exists():
            shutil.rmtree(target)
        top.rename(target)
        marker.touch()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_suite(suite: Suite) -> Path:
    """Download (if not cached) and extract ``suite``'s sdist; return its root folder."""
    cache = cache_dir()
    with _locked(cache):
        return _extract(_download(cache, suite), cache / "src")


def prepare_extra_deps() -> Path | None:
    """Install the suites' extra packages into the cache when this interpreter lacks any of them.

    Returns the folder to append to the test subprocess's ``sys.path`` (after site-packages, so
    the venv's own copies of shared dependencies win), or None when nothing is missing.
    """
    missing = [module for module in EXTRA_REQUIREMENTS if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    requirements = sorted(EXTRA_REQUIREMENTS.values())
    digest = hashlib.sha256(
        "\n".join([sys.implementation.cache_tag, sysconfig.get_platform(), *requirements]).encode()
    ).hexdigest()[:12]
    cache = cache_dir()
    target = cache / "deps" / digest
    marker = target / ".hubbub-installed"
    with _locked(cache):
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            _pip("install", "--quiet", "--target", str(target), *requirements)
            marker.touch()
    return target
