"""The benchmark must keep running: a seconds-long smoke run of every scenario, no thresholds (those live in
the report, bench/results/ and docs/performance.md, never in unit tests)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS_STAMP = ROOT / "bench" / ".peers" / ".installed"


def run_bench(out: Path, *extra: str) -> tuple[str, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "latest.md").read_text() == proc.stdout.rstrip("\n") + "\n"
    return proc.stdout, json.loads((out / "latest.json").read_text())


def test_every_hubbub_scenario_runs(tmp_path: Path) -> None:
    table, raw = run_bench(tmp_path, "--no-peers")
    scenarios = {(r["scenario"], r["target"]) for r in raw["results"]}  # type: ignore[attr-defined,index]
    expected = {
        ("broadcast", "hubbub"),
        ("broadcast 2 KB", "hubbub"),
        ("group send (REST)", "hubbub"),
        ("send to user (REST)", "hubbub"),
        ("client sendToGroup", "hubbub"),
        ("broadcast reliable", "hubbub"),
        ("upstream echo", "hubbub"),
        ("memory per idle connection", "hubbub"),
    }
    if shutil.which("redis-server"):
        expected.add(("cross-node broadcast", "hubbub 3 nodes + Redis"))
    assert expected <= scenarios, raw.get("notes")
    # every round delivered every message to every client, and the report carries each target line
    for r in raw["results"]:  # type: ignore[attr-defined]
        assert all(x["rate"] > 0 for x in r["rounds"]), r
    for line in ("reliable fan-out", "upstream echo", "2 KB broadcast, Azure units", "--workers 2 vs 1"):
        assert line in table
    assert "failed" not in json.dumps(raw["notes"]), raw["notes"]


@pytest.mark.skipif(
    not PEERS_STAMP.exists(), reason="the peers' environment (bench/.peers/) is created by `make bench`"
)
def test_peers_run_in_the_same_harness(tmp_path: Path) -> None:
    table, raw = run_bench(tmp_path, "--only", "broadcast,memory")
    targets = {r["target"] for r in raw["results"]}  # type: ignore[attr-defined]
    assert {"hubbub", "Node ws", "Node socket.io", "python-socketio", "aiohttp", "picows"} <= targets, raw[
        "notes"
    ]
    assert "Ratios, hubbub / peer" in table
    assert (tmp_path / "latest.png").stat().st_size > 0
