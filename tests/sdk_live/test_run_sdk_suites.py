"""Run the official SDKs' own test suites (from their PyPI sdists) against a real hubbub server.

Each SDK test file runs in its own pytest subprocess with a minimal config
(``pytest-sdk.ini``), the ``devtools_testutils`` stand-in on ``PYTHONPATH`` and the environment
pointed at hubbub. Tests that cannot run against hubbub are skipped with a reason (see
``suites.py``); everything else must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk_live.suites import SUITES, Suite, exclusions

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
INI = HERE / "pytest-sdk.ini"
PLUGIN = "hubbub_sdk_live_plugin"
SUBPROCESS_TIMEOUT = 540  # seconds for one SDK test file; each inner test has its own 120 s limit

# Where nothing should answer: used when only collecting, so a stray request fails fast.
UNREACHABLE = "http://127.0.0.1:9"
UNREACHABLE_ENV = {
    "WEBPUBSUB_ENDPOINT": UNREACHABLE,
    "WEBPUBSUB_CONNECTION_STRING": f"Endpoint={UNREACHABLE};AccessKey=unused;Version=1.0;",
    "WEBPUBSUB_REVERSE_PROXY_ENDPOINT": UNREACHABLE,
    "WEBPUBSUBCLIENT_CONNECTION_STRING": f"Endpoint={UNREACHABLE};AccessKey=unused;Version=1.0;",
}


def run_sdk_pytest(
    sdist_root: Path,
    targets: list[str],
    *,
    env: dict[str, str],
    skips: dict[str, str],
    extra_deps: Path | None,
    args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``targets`` (paths relative to the sdist root) in a subprocess."""
    child_env = {k: v for k, v in os.environ.items() if k not in {"PYTEST_ADDOPTS", "PYTEST_PLUGINS"}}
    child_env.update(env)
    # The stand-in devtools_testutils + the plugin, then the sdist itself, so the SDK code under
    # test is exactly the version whose tests run (its azure/ namespace extends over site-packages).
    child_env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(sdist_root)])
    child_env["HUBBUB_SDK_LIVE_SKIPS"] = json.dumps(skips)
    child_env["HUBBUB_SDK_LIVE_DEPS"] = str(extra_deps) if extra_deps else ""
    child_env["AZURE_TEST_RUN_LIVE"] = "true"
    child_env["AZURE_SKIP_LIVE_RECORDING"] = "true"
    child_env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(INI),
        "--rootdir",
        str(sdist_root),
        "-p",
        PLUGIN,
        "-p",
        "no:cacheprovider",
        "--color=no",
        "-ra",
        *args,
        *targets,
    ]
    return subprocess.run(
        cmd,
        cwd=sdist_root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def _summary(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout
    marker = out.find("short test summary info")
    tail = out[out.rfind("\n", 0, marker) + 1 :] if marker >= 0 else "\n".join(out.splitlines()[-15:])
    return f"exit code {proc.returncode}\n{tail}\n{proc.stderr[-3000:]}"


def _report(proc: subprocess.CompletedProcess[str]) -> None:
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_sdist_test_files_are_the_known_ones(suite: Suite, sdk_sources: dict[str, Path]) -> None:
    """The pinned sdist still ships exactly the test files this harness runs one by one."""
    shipped = sorted(p.name for p in (sdk_sources[suite.name] / "tests").glob("test_*.py"))
    assert shipped == sorted(suite.test_files)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 60)
def test_sdk_suite_collects(suite: Suite, sdk_sources: dict[str, Path], sdk_extra_deps: Path | None) -> None:
    """Imports, the devtools_testutils stand-in and every exclusion resolve (no server needed)."""
    proc = run_sdk_pytest(
        sdk_sources[suite.name],
        ["tests"],
        env=UNREACHABLE_ENV,
        skips=exclusions(suite.name),
        extra_deps=sdk_extra_deps,
        args=("--collect-only", "-q"),
    )
    _report(proc)
    assert proc.returncode == 0, _summary(proc)


LIVE_CASES = [
    pytest.param(suite, name, id=f"{suite.name}-{name}") for suite in SUITES for name in suite.test_files
]


@pytest.mark.parametrize(("suite", "test_file"), LIVE_CASES)
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 60)
def test_sdk_suite_against_hubbub(
    suite: Suite,
    test_file: str,
    sdk_sources: dict[str, Path],
    sdk_extra_deps: Path | None,
    sdk_live_env: dict[str, str],
) -> None:
    skips = {k: v for k, v in exclusions(suite.name).items() if k.split("::", 1)[0] == test_file}
    proc = run_sdk_pytest(
        sdk_sources[suite.name],
        [f"tests/{test_file}"],
        env=sdk_live_env,
        skips=skips,
        extra_deps=sdk_extra_deps,
        args=("-v", "--tb=short"),
    )
    _report(proc)
    assert proc.returncode == 0, _summary(proc)
