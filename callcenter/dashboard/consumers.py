"""The agents' feed: ``ws://host/ws/agent/``, the websocket of the agent page.

Its messages are those of ``callcenter.live.messages``; who sees which call
is ``dashboard.access``. The sections of the class are in this order:
lifecycle, incoming frames, channel-layer handlers.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from callcenter.ops import metrics
from callcenter.errors import Forbidden, NotFound
from callcenter.live import messages
from callcenter.streaming.protocols import CLOSE_FORBIDDEN, CLOSE_PROTOCOL_ERROR, CLOSE_UNAUTHENTICATED

from . import selectors
from .access import session_still_valid, viewer_for_user

logger = logging.getLogger(__name__)


class AgentFeedConsumer(AsyncJsonWebsocketConsumer):
    """``ws://host/ws/agent/``: live call events and transcripts for the
    agent page (and the demo's agent view).

    Needs a logged-in session (the page's or the admin's cookie; 4401
    without) and an Origin of an allowed host (checked in routing). A
    supervisor gets every message of every call; an agent gets those of
    their own calls and of the unassigned queue, and ``withdrawn`` when a
    call they could see is taken by another agent (``dashboard.access``).
    Anyone else is refused with 4403. ``?call=<id>`` narrows the feed to one
    call the user may see. Closed with 4401 when its login ends: logged out,
    or the user deactivated or given a new password (``dashboard.signals``).
    """

    # Calls whose visibility is remembered per socket; over it, forget all.
    VISIBILITY_CACHE = 5000

    # --- lifecycle ---

    async def connect(self) -> None:
        self.groups_joined: list[str] = []
        self.visible: dict[int, bool] = {}  # call id -> whether this viewer sees it
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self._refuse("login_required", "log in first", CLOSE_UNAUTHENTICATED)
            return
        try:
            self.viewer = await database_sync_to_async(viewer_for_user)(user)
        except Forbidden as exc:
            await self._refuse(exc.code, exc.message, CLOSE_FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        call = query.get("call", [""])[0]
        if call and not (call.isascii() and call.isdigit() and len(call) <= 18):
            await self._refuse("invalid", "call must be a call id", CLOSE_PROTOCOL_ERROR)
            return
        if call:
            call_id = int(call)
            try:
                await database_sync_to_async(selectors.call_for_viewer)(viewer=self.viewer, call_id=call_id)
            except NotFound as exc:
                await self._refuse(exc.code, exc.message, CLOSE_PROTOCOL_ERROR)
                return
            except Forbidden as exc:  # another agent's, or an unassigned call that left the queue
                await self._refuse(exc.code, exc.message, CLOSE_FORBIDDEN)
                return
            self.visible[call_id] = True
        self.groups_joined = [messages.call_group(int(call))] if call else [messages.AGENTS_GROUP]
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        if self.session_key:
            self.groups_joined.append(messages.session_group(self.session_key))
        self.groups_joined.append(messages.user_group(self.viewer.user_id))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"type": "hello", "user": self.viewer.username, "supervisor": self.viewer.supervisor})

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _refuse(self, code: str, message: str, close_code: int) -> None:
        metrics.AGENT_SOCKETS_REFUSED.labels(code).inc()
        logger.info("agents' feed refused: %s (%s)", message, code)
        await self.send_json({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)

    # --- incoming frames: none expected ---

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        await self.send_json({"type": "error", "code": "unexpected_message", "message": "this feed is read-only"})

    # --- channel-layer handlers ---

    async def session_closed(self, event: dict) -> None:
        """The login session of this socket logged out."""
        await self.send_json({"type": "error", "code": "logged_out", "message": "logged out"})
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def user_changed(self, event: dict) -> None:
        """This socket's user got a new password, was deactivated or deleted:
        closed unless its login session is still valid (one given the new
        password's hash stays open)."""
        valid = await database_sync_to_async(session_still_valid)(session_key=self.session_key,
                                                                  user_id=self.viewer.user_id)  # fmt: skip
        if valid:
            return
        await self.send_json({"type": "error", "code": "session_ended",
                              "message": "this login ended: the password changed or the account was deactivated"})  # fmt: skip
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def transcript_message(self, event: dict) -> None:
        message = event["message"]
        if self.viewer.supervisor:
            await self.send_json(message)
            return
        call_id = message.get("call")
        if len(self.visible) > self.VISIBILITY_CACHE:
            self.visible.clear()
        if message.get("type") == "call":
            visible = self.viewer.sees_username(message.get("agent"))
            seen_before = self.visible.get(call_id)
            self.visible[call_id] = visible
            if visible:
                await self.send_json(message)
            elif seen_before is not False:
                # Its page may list it (from the calls list): take it off.
                await self.send_json(messages.withdrawn_message(call_id=call_id))
            return
        visible = self.visible.get(call_id)
        if visible is None:
            try:
                visible = await database_sync_to_async(selectors.call_visible)(viewer=self.viewer, call_id=call_id)
            except NotFound:
                logger.warning("agents' feed: a %s message of call #%s, which does not exist", message.get("type"),
                               call_id)  # fmt: skip
                visible = False
            self.visible[call_id] = visible
        if visible:
            await self.send_json(message)
