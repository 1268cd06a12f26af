"""Timer triggers: NCRONTAB schedules, firing, and the notifications sample (v1) against a real hubbub."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from hubbub.functions.timers import Schedule, ScheduleError
from tests.functions.support import running_host, write_app
from tests.support.server import run_server

T0 = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/10 * * * * *", T0, T0 + timedelta(seconds=10)),
        ("*/10 * * * * *", T0 + timedelta(seconds=15.5), T0 + timedelta(seconds=20)),
        ("0 */5 * * * *", T0, T0 + timedelta(minutes=5)),
        ("0 30 9 * * *", T0, T0 + timedelta(hours=9, minutes=30)),
        ("0 30 9 * * Sat", T0, datetime(2024, 1, 6, 9, 30, tzinfo=UTC)),
        ("0 0 0 * * 0", T0, datetime(2024, 1, 7, tzinfo=UTC)),
        ("0 0 0 * * 7", T0, datetime(2024, 1, 7, tzinfo=UTC)),
        ("0 0 12 29 Feb *", T0, datetime(2024, 2, 29, 12, tzinfo=UTC)),
        ("0 0 0 1 1 *", T0, datetime(2025, 1, 1, tzinfo=UTC)),
        ("5,10-12 * * * * *", T0 + timedelta(seconds=10), T0 + timedelta(seconds=11)),
        ("0-30/15 * * * * *", T0 + timedelta(seconds=16), T0 + timedelta(seconds=30)),
        ("*/5 * * * *", T0, T0 + timedelta(minutes=5)),  # five fields: no seconds
        ("00:00:30", T0, T0 + timedelta(seconds=30)),  # a TimeSpan
        ("1.00:00:00", T0, T0 + timedelta(days=1)),
    ],
)
def test_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert Schedule.parse(expression).next_after(after) == expected


@pytest.mark.parametrize(
    "expression",
    ["", "* * *", "60 * * * * *", "* * 24 * * *", "*/0 * * * * *", "x * * * * *", "0 0 0 31 2 *", "00:00:00"],
)
def test_bad_schedules(expression: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule.parse(expression).next_after(T0)


TIMER_APP = {
    "tick/function.json": {
        "bindings": [
            {
                "name": "timer",
                "type": "timerTrigger",
                "direction": "in",
                "schedule": "* * * * * *",
                "runOnStartup": True,
            }
        ]
    },
    "tick/__init__.py": """
        import azure.functions as func
        TICKS = []

        def main(timer: func.TimerRequest) -> None:
            TICKS.append(timer.past_due)
            if len(TICKS) == 2:
                raise RuntimeError("a failing tick does not stop the timer")
    """,
    "bad/function.json": {
        "bindings": [{"name": "t", "type": "timerTrigger", "direction": "in", "schedule": "nope"}]
    },
    "bad/__init__.py": "def main(t):\n    pass\n",
}


async def test_timer_fires_and_survives_errors(tmp_path: Path) -> None:
    async with running_host(write_app(tmp_path / "timerapp", TIMER_APP)) as host:
        assert [name for name, _ in host.errors] == ["bad"]
        assert "tick: timerTrigger (* * * * * *)" in "\n".join(host.banner())
        ticks = host.app.functions[-1].func.__globals__["TICKS"] if host.app else []
        for _ in range(50):
            if len(ticks) >= 3:
                break
            await asyncio.sleep(0.1)
        assert ticks[:3] == [False, False, False]  # runOnStartup, then every second


async def test_notifications_sample(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "samples" / "notifications"
    with run_server() as service:
        settings = {"WebPubSubConnectionString": service.connection_string}
        async with running_host(sample, keys_dir=tmp_path / "keys", settings=settings) as host:
            assert host.app is not None and host.app.model == "v1" and host.errors == []
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{host.base_url}/api/index") as r:
                    assert "/api/negotiate" in await r.text()
                async with http.get(f"{host.base_url}/api/negotiate") as r:
                    url = json.loads(await r.text())["url"]
                assert "/client/hubs/sample_notification?access_token=" in url
                ws = await http.ws_connect(url)  # the page: a plain WebSocket
                invoke = f"{host.base_url}/admin/functions/notification"
                async with http.post(invoke, json={"input": ""}) as r:
                    assert r.status == 401  # the admin API takes the master key
                async with http.post(invoke, params={"code": host.keys.master}, json={"input": ""}) as r:
                    assert r.status == 202
                msg = await ws.receive(timeout=5)
                assert msg.data.startswith("[ DateTime: ") and "Temperature:" in msg.data and "°C" in msg.data
                await ws.close()
