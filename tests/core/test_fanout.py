from __future__ import annotations

import orjson

from hubbub.core.fanout import deliver
from hubbub.core.session import SLOW_CLIENT_BUFFER_BYTES, Session
from hubbub.filters import parse_filter
from hubbub.protocols import CODECS, SIMPLE
from hubbub.protocols.events import DataMessage, DataType, Payload
from tests.core.fakes import RecordingLink

JSON = CODECS["json.webpubsub.azure.v1"]
RELIABLE = CODECS["json.reliable.webpubsub.azure.v1"]


def sessions(n: int, codec=JSON, **kw) -> list[Session]:  # type: ignore[no-untyped-def]
    return [Session("h", codec, RecordingLink(), user_id=f"u{i}", **kw) for i in range(n)]


def payload_of(frame: bytes) -> bytes:
    return frame[2:] if frame[1] < 126 else frame[4:]


def test_one_shared_frame_per_codec() -> None:
    group = sessions(3) + sessions(2, SIMPLE)
    msg = DataMessage(Payload(DataType.TEXT, b"hi"), group="g")
    assert deliver(msg, group) == 5
    json_frames = [s.link.frames[0] for s in group[:3]]  # type: ignore[union-attr]
    assert json_frames[0] is json_frames[1] is json_frames[2]
    assert payload_of(group[3].link.frames[0]) == b"hi"  # type: ignore[union-attr]


def test_excluded_filter_and_skip() -> None:
    group = sessions(4)
    msg = DataMessage(Payload(DataType.TEXT, b"x"))
    n = deliver(msg, group, excluded={group[0].id}, filter=parse_filter("userId ne 'u1'"), skip=group[2].id)
    assert n == 1
    assert [bool(s.link.frames) for s in group] == [False, False, False, True]  # type: ignore[union-attr]


def test_reliable_sessions_get_their_own_sequence_ids() -> None:
    a, b = sessions(2, RELIABLE)
    for text in (b"1", b"2"):
        deliver(DataMessage(Payload(DataType.TEXT, text)), [a, b])
    a.reliable.ack(1)  # type: ignore[union-attr]
    seqs = [orjson.loads(payload_of(f))["sequenceId"] for f in b.link.frames]  # type: ignore[union-attr]
    assert seqs == [1, 2]
    assert len(a.reliable.unacked()) == 1 and len(b.reliable.unacked()) == 2  # type: ignore[union-attr]


def test_reliable_sessions_at_the_same_sequence_id_share_one_frame() -> None:
    a, b, c = sessions(3, RELIABLE)
    deliver(DataMessage(Payload(DataType.TEXT, b"0")), [c])  # c is one message ahead
    deliver(DataMessage(Payload(DataType.TEXT, b"1")), [a, b, c])
    fa, fb, fc = (s.link.frames[-1] for s in (a, b, c))  # type: ignore[union-attr]
    assert fa is fb and a.reliable.unacked()[0] is fa  # type: ignore[union-attr]
    assert [orjson.loads(payload_of(f))["sequenceId"] for f in (fa, fc)] == [1, 2]
    assert orjson.loads(payload_of(fc))["data"] == "1"


def test_slow_client_is_closed_not_waited_for() -> None:
    slow = Session("h", JSON, RecordingLink(buffered=SLOW_CLIENT_BUFFER_BYTES + 1))
    fast = Session("h", JSON, RecordingLink())
    deliver(DataMessage(Payload(DataType.TEXT, b"x")), [slow, fast])
    assert slow.closed and slow.link.closed == (1008, "SlowClient")  # type: ignore[union-attr]
    assert fast.link.frames  # type: ignore[union-attr]
