"""``recorded_by_proxy``, the ``test_proxy`` fixture and sanitizer registration, in live mode.

With the real package in live mode without recording, ``recorded_by_proxy`` only trims the kwargs
and calls the test; the test proxy and its sanitizers matter for recordings alone. So here the
decorator calls the test, the fixture starts nothing and the sanitizer calls record nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .helpers import is_live, trim_kwargs_from_test_function


def recorded_by_proxy(test_func: Callable[..., Any]) -> Callable[..., Any]:
    # Deliberately not functools.wraps: like the real decorator, the wrapper exposes
    # ``(*args, **kwargs)`` so pytest does not take the test's keyword parameters for fixtures.
    def record_wrap(*args: Any, **kwargs: Any) -> Any:
        is_live()
        trimmed = dict(kwargs)
        trim_kwargs_from_test_function(test_func, trimmed)
        return test_func(*args, **trimmed)

    return record_wrap


@pytest.fixture(scope="session")
def test_proxy() -> Iterator[None]:
    """Live mode talks to the service directly: there is no proxy to start."""
    is_live()
    yield None


def _recording_only(*args: Any, **kwargs: Any) -> None:
    """Sanitizers and matchers shape recordings; live mode has none."""


add_general_regex_sanitizer = _recording_only
add_general_string_sanitizer = _recording_only
add_header_regex_sanitizer = _recording_only
add_body_key_sanitizer = _recording_only
add_uri_regex_sanitizer = _recording_only
add_oauth_response_sanitizer = _recording_only
set_bodiless_matcher = _recording_only
set_custom_default_matcher = _recording_only
