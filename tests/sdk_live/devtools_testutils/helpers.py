"""Mode switches and the kwargs-trimming helper of ``devtools_testutils`` (live mode only)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

_FALSY = {"false", "no", "0", "off"}


class AzureTestError(Exception):
    """Raised for a harness misconfiguration (same name as the real package's error)."""


def _check_live_mode() -> None:
    run_live = os.environ.get("AZURE_TEST_RUN_LIVE")
    if run_live is not None and run_live.strip().lower() in _FALSY:
        raise AzureTestError(
            "this devtools_testutils stand-in only runs tests live (AZURE_TEST_RUN_LIVE=true); "
            "playback needs Microsoft's real package and its test proxy"
        )


def is_live() -> bool:
    """Always live: requests go to the real endpoint named by the environment."""
    _check_live_mode()
    return True


def is_live_and_not_recording() -> bool:
    """Live without the recording proxy, the only mode this stand-in has."""
    return is_live()


def trim_kwargs_from_test_function(fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Drop the keyword arguments ``fn`` cannot accept (same rule as the real helper).

    Preparers hand every environment value they load to the next callable; a test method that
    names only some of them, and has no ``**kwargs``, receives just those.
    """
    if getattr(fn, "__is_preparer", False):
        return
    spec = inspect.getfullargspec(fn)
    if spec.varkw is None:
        for key in [k for k in kwargs if k not in spec.args]:
            del kwargs[key]
