"""Timer triggers: NCRONTAB schedules (``{second} {minute} {hour} {day} {month} {day-of-week}``).

Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``, and English
month/day names (``Jan``, ``Mon``); day-of-week 0 and 7 are Sunday. Five fields (no seconds) are
read as ``0 <fields>``; a ``hh:mm:ss`` TimeSpan repeats at that interval. A time matches when every
field matches (day of month *and* day of week, as NCRONTAB does). Times are UTC (the
``WEBSITE_TIME_ZONE`` setting is not read). ``runOnStartup`` runs the function once when the host
starts; ``useMonitor`` (past-due tracking in storage) is not kept: ``past_due`` is always False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.functions import timer as func_timer

from hubbub.functions.appconfig import resolve_settings
from hubbub.functions.invoke import FunctionFailed, Invocation, Invoker
from hubbub.functions.loader import FunctionDef

__all__ = ["Schedule", "ScheduleError", "Timers"]

log = logging.getLogger("hubbub.functions")

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_TIMESPAN = re.compile(r"(\d+\.)?(\d{1,2}):(\d{2}):(\d{2})")


class ScheduleError(ValueError):
    pass


def _number(text: str, names: list[str] | None, low: int) -> int:
    if names and text[:3].lower() in names and text.isalpha():
        return names.index(text[:3].lower()) + low
    try:
        return int(text)
    except ValueError:
        raise ScheduleError(f"'{text}' is not a number") from None


def _field(text: str, low: int, high: int, names: list[str] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = _number(step_text, None, 0) if step_text else 1
        if step < 1:
            raise ScheduleError(f"step must be at least 1 in '{part}'")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _number(a, names, low), _number(b, names, low)
        else:
            start = _number(base, names, low)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"'{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    interval: timedelta | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        text = text.strip()
        span = _TIMESPAN.fullmatch(text)
        if span:
            days = int(span.group(1)[:-1]) if span.group(1) else 0
            interval = timedelta(days=days, hours=int(span.group(2)), minutes=int(span.group(3)))
            interval += timedelta(seconds=int(span.group(4)))
            if interval <= timedelta(0):
                raise ScheduleError(f"'{text}': the interval must be positive")
            return cls(interval=interval)
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ScheduleError(f"'{text}' is not an NCRONTAB expression (6 fields, seconds first)")
        weekdays = _field(fields[5], 0, 7, _DAYS)
        return cls(
            seconds=_field(fields[0], 0, 59),
            minutes=_field(fields[1], 0, 59),
            hours=_field(fields[2], 0, 23),
            days=_field(fields[3], 1, 31),
            months=_field(fields[4], 1, 12, _MONTHS),
            weekdays=frozenset(d % 7 for d in weekdays),
        )

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` (UTC, whole seconds) the schedule fires."""
        if self.interval is not None:
            return after + self.interval
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ScheduleError("the schedule never fires")


class Timers:
    """One task per timer-triggered function, started with the host and cancelled with it."""

    def __init__(self, functions: Iterable[FunctionDef], invoker: Invoker) -> None:
        self.invoker = invoker
        self.schedules: dict[str, tuple[FunctionDef, Schedule]] = {}
        self.errors: list[tuple[str, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        for fn in functions:
            if fn.trigger.type != "timertrigger":
                continue
            try:
                text = resolve_settings(str(fn.trigger.get("schedule") or ""))
                self.schedules[fn.name] = (fn, Schedule.parse(text))
            except ValueError as exc:
                self.errors.append((fn.name, f"schedule: {exc}"))

    def describe(self, fn: FunctionDef) -> str:
        return f"timerTrigger ({fn.trigger.get('schedule')})"

    async def fire(self, fn: FunctionDef, past_due: bool = False) -> None:
        request = func_timer.TimerRequest(past_due=past_due)
        with contextlib.suppress(FunctionFailed):  # logged by the invoker; the timer keeps going
            await self.invoker.run(Invocation(fn, request))

    async def _run(self, fn: FunctionDef, schedule: Schedule) -> None:
        if str(fn.trigger.get("runOnStartup")).lower() == "true":
            await self.fire(fn)
        while True:
            now = datetime.now(UTC)
            due = schedule.next_after(now)
            await asyncio.sleep((due - datetime.now(UTC)).total_seconds())
            await self.fire(fn)

    def start(self) -> None:
        for fn, schedule in self.schedules.values():
            self._tasks.append(asyncio.create_task(self._run(fn, schedule), name=f"timer {fn.name}"))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
