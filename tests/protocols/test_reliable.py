from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hubbub.protocols.reliable import ReliableState


def test_ids_start_at_one_and_increase() -> None:
    s = ReliableState()
    ids = []
    for _ in range(3):
        ids.append(s.next_id)
        assert s.record(b"x")
    assert ids == [1, 2, 3] and s.next_id == 4


def test_cumulative_ack_and_replay() -> None:
    s = ReliableState()
    for i in range(1, 6):
        assert s.record(f"m{i}".encode())
    s.ack(3)
    assert s.unacked() == [b"m4", b"m5"]
    s.ack(2)  # stale ack is ignored
    assert s.unacked() == [b"m4", b"m5"]
    s.ack(99)  # acks beyond what was sent are clamped
    assert s.unacked() == [] and s.acked == 5 and s.pending_bytes == 0


def test_a_buffer_that_starts_past_one_acks_by_sequence_id() -> None:
    s = ReliableState()
    s.next_id = 100  # a session taken over from another node: its buffer starts at 100
    for i in range(100, 105):
        assert s.record(f"m{i}".encode())
    s.ack(102)
    assert s.unacked() == [b"m103", b"m104"] and s.pending_bytes == 8


def test_overflow_by_count_and_bytes() -> None:
    s = ReliableState(max_messages=2, max_bytes=10)
    assert s.record(b"a")
    assert s.record(b"b")
    assert not s.record(b"c")
    s2 = ReliableState(max_messages=100, max_bytes=10)
    assert not s2.record(b"x" * 11)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.binary(max_size=8)), st.tuples(st.just("ack"), st.integers(0, 60))
        ),
        max_size=80,
    )
)
def test_replay_is_exactly_the_unacked_suffix(ops: list[tuple[str, object]]) -> None:
    s = ReliableState(max_messages=10_000)
    sent: list[tuple[int, bytes]] = []
    acked = 0
    for op, arg in ops:
        if op == "send":
            assert isinstance(arg, bytes)
            sid = s.next_id
            s.record(arg)
            sent.append((sid, arg))
        else:
            assert isinstance(arg, int)
            s.ack(arg)
            acked = max(acked, min(arg, len(sent)))
    assert s.unacked() == [d for i, d in sent if i > acked]
