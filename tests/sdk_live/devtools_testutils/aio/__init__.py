"""Async half of the ``devtools_testutils`` stand-in."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ..helpers import is_live, trim_kwargs_from_test_function

__all__ = ["recorded_by_proxy_async"]


def recorded_by_proxy_async(test_func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    # Not functools.wraps, for the same reason as ``recorded_by_proxy``.
    async def record_wrap(*args: Any, **kwargs: Any) -> Any:
        is_live()
        trimmed = dict(kwargs)
        trim_kwargs_from_test_function(test_func, trimmed)
        return await test_func(*args, **trimmed)

    return record_wrap
