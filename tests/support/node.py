"""Running the Node.js test files of ``tests/interop/node`` (official npm clients) from pytest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent.parent / "interop" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
NODE = shutil.which("node")


def missing_packages(*packages: str) -> bool:
    """True when one of the npm ``packages`` is not installed (``make node-deps`` installs them)."""
    return any(not (NODE_MODULES / p).is_dir() for p in packages)


def run_node_test(test_file: str, env: dict[str, str], timeout: float) -> str:
    """``node --test`` one file with ``env`` added; its output, or a pytest failure with it."""
    assert NODE is not None
    full = {**os.environ, **env, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    full.pop("NODE_OPTIONS", None)
    cmd = [NODE, "--test", "--test-reporter=spec", test_file]
    try:
        proc = subprocess.run(
            cmd,
            cwd=NODE_DIR,
            env=full,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = "".join(
            x if isinstance(x, str) else (x or b"").decode("utf-8", "replace")
            for x in (exc.stdout, exc.stderr)
        )
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout}s (leaked client?)\n{out}")
    output = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{output}", pytrace=False)
    return output
