"""The benchmark must keep running: a seconds-long smoke run, no thresholds (those live in the report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_broadcast_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "json.reliable.webpubsub.azure.v1 deliveries/s" in out.stdout
    assert "reliable / non-reliable fan-out" in out.stdout
