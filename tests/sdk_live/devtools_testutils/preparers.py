"""``EnvironmentVariableLoader`` / ``PowerShellPreparer``: environment values as test kwargs."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

from .helpers import AzureTestError, is_live, trim_kwargs_from_test_function


class EnvironmentVariableLoader:
    """Decorator factory: ``@Loader("webpubsub", webpubsub_endpoint="<fake>")``.

    Every keyword whose name contains ``directory`` names an environment variable (its upper-case
    form). In live mode the test receives the *real* value of each, as a keyword argument with the
    lower-case name; a missing variable is an error, exactly as in the real loader. The keyword's
    value is the fake value the real package would write into recordings; it is unused here.
    """

    def __init__(
        self,
        directory: str,
        name_prefix: str = "",
        disable_recording: bool = True,
        client_kwargs: dict[str, Any] | None = None,
        random_name_enabled: bool = False,
        use_cache: bool = True,
        preparers: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.directory = directory
        self.fake_values = {key: value for key, value in kwargs.items() if directory in key}

    def real_values(self) -> dict[str, str]:
        is_live()
        values: dict[str, str] = {}
        for key, fake in self.fake_values.items():
            if not fake:
                raise AzureTestError(f"{key} needs a fake value for recordings (as in the real loader)")
            try:
                values[key.lower()] = os.environ[key.upper()]
            except KeyError:
                raise AzureTestError(f"live test needs the environment variable {key.upper()}") from None
        return values

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def _preparer_wrapper(test_class_instance: Any, **kwargs: Any) -> None:
            kwargs.update(self.real_values())
            trimmed = dict(kwargs)
            trim_kwargs_from_test_function(fn, trimmed)
            if inspect.iscoroutinefunction(fn):
                # The real preparer runs coroutine tests to completion the same way.
                asyncio.run(fn(test_class_instance, **trimmed))
            else:
                fn(test_class_instance, **trimmed)

        # Same wrapping as the real preparer: pytest sees the signature of ``fn`` (the
        # ``recorded_by_proxy`` wrapper, ``*args, **kwargs``), so it asks for no fixtures.
        setattr(_preparer_wrapper, "__is_preparer", True)
        functools.update_wrapper(_preparer_wrapper, fn)
        return _preparer_wrapper


# The older name; the real package has a twin class with the same behaviour.
PowerShellPreparer = EnvironmentVariableLoader
