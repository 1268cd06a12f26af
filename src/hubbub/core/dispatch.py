"""Client requests -> permission check -> node action -> ack.

No I/O of its own: results reach the client through ``Session.push``. Errors
become failed acks (when the request has an ``ackId``) using the names of
:mod:`hubbub.errors`; requests without an ``ackId`` fail silently, as on Azure.
"""

from __future__ import annotations

import logging
from typing import Protocol

from hubbub.auth import Permission
from hubbub.broker.base import Scope
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.core.streams import Streams
from hubbub.errors import Forbidden, HubbubError
from hubbub.protocols.events import (
    Ack,
    CancelInvocation,
    ClientRequest,
    DataMessage,
    DataType,
    Invoke,
    InvokeResponse,
    JoinGroup,
    LeaveGroup,
    Payload,
    Ping,
    SendToGroup,
    SequenceAck,
    StreamData,
    StreamEnd,
    StreamStart,
    UnsupportedRequest,
    UserEvent,
)
from hubbub.validation import check_group

__all__ = ["Dispatcher", "NoEventHandlers", "UserEventSink", "UserEventUnhandled"]

log = logging.getLogger("hubbub.dispatch")


class UserEventUnhandled(HubbubError):
    """No event handler takes this user event (ack ``InternalServerError``, as the real service)."""

    status = 500
    code = "InternalServerError"
    ack_name = "InternalServerError"


class UserEventSink(Protocol):
    """Where user events go (the upstream event handlers of a later issue)."""

    async def user_event(self, session: Session, event: str, payload: Payload) -> Payload | None:
        """Deliver a blocking user event; return the handler's reply for the sender, if any.

        Raises:
            UserEventUnhandled: no handler matches, or it failed.
        """
        ...


class NoEventHandlers:
    """The sink used while no event handler is configured."""

    async def user_event(self, session: Session, event: str, payload: Payload) -> Payload | None:
        raise UserEventUnhandled(f"No event handler is registered for event '{event}'")


class Dispatcher:
    def __init__(self, node: Node, events: UserEventSink | None = None) -> None:
        self.node = node
        self.events: UserEventSink = events or NoEventHandlers()
        self.streams = Streams(node)

    async def handle(self, session: Session, request: ClientRequest) -> None:
        """Process one decoded request of ``session``; never raises."""
        if isinstance(request, Ping):
            session.push(session.codec.encode_pong())
            return
        if isinstance(request, SequenceAck):
            session.acknowledge(request.sequence_id)
            return
        if isinstance(request, (StreamStart, StreamData, StreamEnd)):
            # stream requests carry no ackId: their answers are streamAck / streamNack / streamClosed
            await self.streams.handle(session, request)
            return
        ack_id = getattr(request, "ack_id", None)
        if ack_id is not None and not session.remember_ack(ack_id):
            self._ack(session, ack_id, "Duplicate", f"Message with ack-id {ack_id} has been processed")
            return
        try:
            await self._execute(session, request)
        except HubbubError as exc:
            if ack_id is not None:
                self._ack(session, ack_id, exc.ack_name, exc.message)
            elif isinstance(request, UserEvent) and not session.codec.pubsub:
                # simple clients have no acks: the real service drops the connection
                session.close(1011, exc.message)
            else:
                log.debug("request of %s failed: %s", session, exc)
            return
        except Exception:
            log.exception("internal error while handling %s from %s", type(request).__name__, session)
            if ack_id is not None:
                self._ack(session, ack_id, "InternalServerError", "Internal server error")
            return
        if ack_id is not None:
            self._ack(session, ack_id, None, None)

    async def _invoke(self, session: Session, request: Invoke) -> None:
        """``invoke`` → the user event ``request.event`` → ``invokeResponse`` (spec §4.8)."""
        try:
            if request.target != "event" or not request.event:
                raise UserEventUnhandled(f"Unsupported invoke target '{request.target}'")
            reply = await self.events.user_event(
                session, request.event, request.payload or Payload(DataType.TEXT, b"")
            )
            response = InvokeResponse(request.invocation_id, True, reply)
        except HubbubError as exc:
            response = InvokeResponse(request.invocation_id, False, None, exc.ack_name, exc.message)
        session.push(session.codec.encode_invoke_response(response))

    def _ack(self, session: Session, ack_id: int, name: str | None, message: str | None) -> None:
        session.push(session.codec.encode_ack(Ack(ack_id, name is None, name, message)))

    async def _execute(self, session: Session, request: ClientRequest) -> None:
        node = self.node
        if isinstance(request, SendToGroup):
            check_group(request.group)
            if not session.permissions.allows(Permission.SEND_TO_GROUP, request.group):
                raise Forbidden(f"The connection has no permission to send to group '{request.group}'")
            await node.send(
                session.hub,
                Scope.GROUP,
                request.group,
                request.payload,
                from_session=session,
                no_echo=request.no_echo,
            )
        elif isinstance(request, (JoinGroup, LeaveGroup)):
            check_group(request.group)
            if not session.permissions.allows(Permission.JOIN_LEAVE_GROUP, request.group):
                verb = "join" if isinstance(request, JoinGroup) else "leave"
                raise Forbidden(f"The connection has no permission to {verb} group '{request.group}'")
            if isinstance(request, JoinGroup):
                node.join_local(session, request.group)
            else:
                node.leave_local(session, request.group)
        elif isinstance(request, UserEvent):
            reply = await self.events.user_event(session, request.event, request.payload)
            if reply is not None:
                session.push_data(DataMessage(reply))
        elif isinstance(request, Invoke):
            await self._invoke(session, request)
        elif isinstance(request, CancelInvocation):
            return
        elif isinstance(request, UnsupportedRequest):
            raise HubbubError(f"Unsupported message type '{request.type}'")
