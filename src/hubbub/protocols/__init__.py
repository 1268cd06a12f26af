"""Client subprotocol codecs and the negotiation rule (spec §4.2)."""

from __future__ import annotations

from collections.abc import Sequence

from hubbub.protocols.base import Codec
from hubbub.protocols.json_v1 import JsonCodec, JsonReliableCodec
from hubbub.protocols.protobuf_v1 import ProtobufCodec, ProtobufReliableCodec
from hubbub.protocols.simple import SimpleCodec

__all__ = ["CODECS", "Codec", "negotiate"]

#: Predefined subprotocols; any other offered value makes a simple client.
CODECS: dict[str, Codec] = {
    c.name: c for c in (JsonCodec(), JsonReliableCodec(), ProtobufCodec(), ProtobufReliableCodec())
}
SIMPLE = SimpleCodec()


def negotiate(offered: Sequence[str]) -> tuple[str | None, Codec]:
    """Pick the subprotocol to echo and the codec to use.

    One offered value is always echoed (browsers fail the handshake otherwise),
    and a value that is not predefined makes the connection a simple one. With
    several offered, the first predefined one wins, else the first offered.
    """
    if not offered:
        return None, SIMPLE
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return name, codec
    return offered[0], SIMPLE
