"""Call one function: bind its parameters, run it (sync functions off the event loop), hand its outputs on.

Parameters get, by name: the trigger value, ``context`` (a :class:`func.Context`), input binding
values (resolved by the host's input resolvers) and a :class:`func.Out` per output binding. After the
call, set outputs and the return value (``$return``) go to the host's output sinks — the ``webPubSub``
actions are sent before the trigger answers, as the real host flushes its collectors. A non-None
return value without a ``$return`` binding is an error unless the trigger takes it (the Web PubSub
trigger's connect/user-event response).

Every invocation is logged as Core Tools does: ``Executed 'Functions.<name>' (Succeeded, Id=…,
Duration=…ms)``; a failure is one ERROR line with the exception, then its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc as func_abc  # TraceContext/RetryContext are not re-exported

from hubbub.functions.expressions import BindingData
from hubbub.functions.loader import RETURN, Binding, FunctionDef

__all__ = [
    "FunctionFailed",
    "FunctionTimeout",
    "InputResolver",
    "Invocation",
    "Invoker",
    "OutputSink",
    "Result",
]

log = logging.getLogger("hubbub.functions")

#: trigger types whose function may return a value without a ``$return`` binding
RETURNING_TRIGGERS = frozenset({"webpubsubtrigger", "signalrtrigger"})


class FunctionFailed(Exception):
    """The function (or one of its bindings) raised; already logged with its traceback."""


@dataclass
class Invocation:
    function: FunctionDef
    trigger_value: Any
    data: BindingData = field(default_factory=BindingData)
    #: the transport-level request (an aiohttp request) for bindings that read it (webPubSubContext)
    request: Any = None
    invocation_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Result:
    #: the return value (None if the function returned nothing)
    value: Any
    #: values of output bindings that were set, by binding name (``$return`` included)
    outputs: dict[str, Any]


InputResolver = Callable[[Binding, Invocation], Awaitable[Any]]
OutputSink = Callable[[Binding, Any, Invocation], Awaitable[None]]


class _Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func_abc.TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class _Context(func.Context):
    def __init__(self, function: FunctionDef, invocation_id: str) -> None:
        self._function = function
        self._invocation_id = invocation_id
        self._local = threading.local()
        self._local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function.name

    @property
    def function_directory(self) -> str:
        return str(self._function.directory)

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return _RetryContext()


class FunctionTimeout(Exception):
    """The function ran longer than host.json's ``functionTimeout``."""


def _timespan(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


class Invoker:
    """Runs functions; ``timeout`` is host.json's ``functionTimeout`` in seconds (None: no limit).

    A timed-out async function is cancelled; a sync one keeps its worker thread until it returns (Python
    cannot stop a thread) and its result is dropped. Either way the invocation fails at once.
    """

    def __init__(
        self, inputs: dict[str, InputResolver], outputs: dict[str, OutputSink], timeout: float | None = None
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.timeout = timeout

    async def _arguments(self, inv: Invocation) -> tuple[dict[str, Any], dict[str, _Out]]:
        fn = inv.function
        by_name = {b.name: b for b in fn.bindings}
        args: dict[str, Any] = {}
        outs: dict[str, _Out] = {}
        for name in fn.params:
            binding = by_name.get(name)
            if binding is None:  # the loader allows only 'context' here
                args[name] = _Context(fn, inv.invocation_id)
            elif binding.is_trigger:
                args[name] = inv.trigger_value
            elif binding.direction == "out":
                args[name] = outs[name] = _Out()
            else:
                args[name] = await self.inputs[binding.type](binding, inv)
        return args, outs

    async def _call(self, fn: FunctionDef, args: dict[str, Any], invocation_id: str) -> Any:
        limit = asyncio.timeout(self.timeout)
        try:
            async with limit:
                if fn.is_async:
                    return await fn.func(**args)
                return await asyncio.to_thread(functools.partial(fn.func, **args))
        except TimeoutError:
            if not limit.expired():
                raise  # the function's own TimeoutError
            assert self.timeout is not None
            span = _timespan(self.timeout)
            log.error(
                "Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). "
                "Initiating cancellation.",
                span,
                fn.name,
                invocation_id,
            )
            raise FunctionTimeout(
                f"Timeout value of {span} was exceeded by function: Functions.{fn.name}"
            ) from None

    async def run(self, inv: Invocation) -> Result:
        fn = inv.function
        started = time.perf_counter()
        try:
            args, outs = await self._arguments(inv)
            value = await self._call(fn, args, inv.invocation_id)
            outputs = {name: out.get() for name, out in outs.items() if out.get() is not None}
            returns = next((b for b in fn.outputs() if b.name == RETURN), None)
            if value is not None:
                if returns is not None:
                    outputs[RETURN] = value
                elif fn.trigger.type not in RETURNING_TRIGGERS:
                    raise TypeError(f"function {fn.name} without a $return binding returned a non-None value")
            for binding in fn.outputs():
                sink = self.outputs.get(binding.type)
                if sink is not None and binding.name in outputs:
                    await sink(binding, outputs[binding.name], inv)
        except Exception as exc:
            ms = (time.perf_counter() - started) * 1000
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms): %s: %s",
                fn.name,
                inv.invocation_id,
                ms,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            raise FunctionFailed(f"{type(exc).__name__}: {exc}") from exc
        ms = (time.perf_counter() - started) * 1000
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", fn.name, inv.invocation_id, ms
        )
        return Result(value, outputs)
