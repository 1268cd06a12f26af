"""Stopping the broker's background tasks when a cancel is lost (docs/status.md #7)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from hubbub.broker.wire import cancel_and_wait

# a regression hangs rather than fails: give it a bound well above the fraction of a second it takes
pytestmark = [pytest.mark.timeout(15)]

LOSES_CANCELS = sys.version_info < (3, 12)  # CPython gh-86296: asyncio.wait_for before 3.12


async def _written() -> None:
    """What redis-py's ``send_packed_command`` wraps in ``asyncio.wait_for``: done on its first step."""


class Loop:
    """A background loop (like the heartbeat) whose first step is a redis-py write."""

    def __init__(self) -> None:
        self.lost_a_cancel = False

    async def run(self) -> None:
        await asyncio.wait_for(_written(), 5)
        task = asyncio.current_task()
        assert task is not None
        self.lost_a_cancel = task.cancelling() > 0  # cancelled, but wait_for returned: it goes on
        while True:
            await asyncio.sleep(3600)


async def start_in_the_window(loop: Loop) -> asyncio.Task[None]:
    """Start ``loop`` and stop where a cancel is lost: the write is done, its waiter not yet woken."""
    task = asyncio.get_running_loop().create_task(loop.run())
    await asyncio.sleep(0)  # the task enters wait_for, which runs the write as a task of its own
    await asyncio.sleep(0)  # the write finished; waking wait_for's waiter is only scheduled
    return task


async def test_cancel_and_wait_ends_a_task_that_lost_the_cancel() -> None:
    loop = Loop()
    task = await start_in_the_window(loop)
    await cancel_and_wait(task)  # task.cancel(); await task: waits forever on Python 3.11
    assert task.cancelled()
    assert loop.lost_a_cancel == LOSES_CANCELS  # the test did hit the race where there is one


async def test_cancel_and_wait_raises_what_the_task_raised() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)
