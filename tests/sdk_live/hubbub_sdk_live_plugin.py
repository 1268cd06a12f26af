"""pytest plugin loaded (``-p hubbub_sdk_live_plugin``) into the SDK-suite subprocess.

- appends ``HUBBUB_SDK_LIVE_DEPS`` (extra packages installed into the cache) to the *end* of
  ``sys.path``, so the venv's packages keep precedence;
- marks the tests listed in ``HUBBUB_SDK_LIVE_SKIPS`` (JSON: node id relative to the suite's
  ``tests/`` folder -> reason) as skipped with that reason, and fails the run when a listed
  node id matches no collected test (a stale exclusion list).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

_deps = os.environ.get("HUBBUB_SDK_LIVE_DEPS")
if _deps and _deps not in sys.path:
    sys.path.append(_deps)


def _skips() -> dict[str, str]:
    raw = os.environ.get("HUBBUB_SDK_LIVE_SKIPS") or "{}"
    skips = json.loads(raw)
    if not isinstance(skips, dict):
        raise pytest.UsageError("HUBBUB_SDK_LIVE_SKIPS must be a JSON object")
    return {str(k): str(v) for k, v in skips.items()}


def _relative_id(nodeid: str) -> str:
    # Node ids are relative to the rootdir (the sdist folder): "tests/test_smoke.py::Cls::test".
    return nodeid.removeprefix("tests/")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    skips = _skips()
    matched: set[str] = set()
    for item in items:
        node_id = _relative_id(item.nodeid)
        # A parametrized test is excluded by its id without the [params] part too.
        key = node_id if node_id in skips else node_id.split("[", 1)[0]
        if key in skips:
            # The skip is reported at the decorator's location, so name the test in the reason.
            item.add_marker(pytest.mark.skip(reason=f"{node_id} not run against hubbub: {skips[key]}"))
            matched.add(key)
    stale = sorted(set(skips) - matched)
    if stale:
        raise pytest.UsageError("excluded tests that were not collected (stale list?): " + ", ".join(stale))
