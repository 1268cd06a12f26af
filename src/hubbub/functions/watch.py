"""Restart the functions host when the app changes, as Core Tools' ``func start`` does.

The Functions host watches its script root and restarts when the app's files change (host.json's
``fileWatchingEnabled``, default true, turns that off). We poll the file tree once a second: no
dependency, the same on every platform, and cheap for an app folder. Watched: ``*.py`` and
``*.json`` files (code, ``host.json``, ``function.json``, ``local.settings.json``) below the root,
plus host.json's ``watchFiles``; skipped: hidden folders, virtual environments, caches and
``node_modules``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Snapshot", "changed_file", "snapshot", "wait_for_change"]

#: (modification time in ns, size) per watched file
Snapshot = dict[str, tuple[int, int]]

WATCHED_SUFFIXES = (".py", ".json")
SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "venv", "env", ".python_packages"})
POLL_SECONDS = 1.0
#: editors write a file in several steps: wait this long for the tree to settle before restarting
SETTLE_SECONDS = 0.3


def snapshot(root: Path, extra_files: Iterable[str] = ()) -> Snapshot:
    """The watched files below ``root`` and their (mtime, size)."""
    found: Snapshot = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS]
        for name in files:
            if name.endswith(WATCHED_SUFFIXES):
                _add(found, os.path.join(folder, name))
    for name in extra_files:
        _add(found, str(root / name))
    return found


def _add(found: Snapshot, path: str) -> None:
    try:
        stat = os.stat(path)
    except OSError:  # gone between listing and stat, or a watchFiles entry that does not exist
        return
    found[path] = (stat.st_mtime_ns, stat.st_size)


def changed_file(before: Snapshot, after: Snapshot) -> str | None:
    """One path that was added, removed or modified between the snapshots (None: no change)."""
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            return path
    return None


async def wait_for_change(
    root: Path, before: Snapshot, extra_files: Iterable[str] = (), interval: float = POLL_SECONDS
) -> tuple[str, Snapshot]:
    """Poll until a watched file changes; the changed path and the settled snapshot."""
    extra = tuple(extra_files)
    while True:
        await asyncio.sleep(interval)
        now = await asyncio.to_thread(snapshot, root, extra)
        path = changed_file(before, now)
        if path is not None:
            await asyncio.sleep(SETTLE_SECONDS)
            return path, await asyncio.to_thread(snapshot, root, extra)
