"""What both media consumers share: ``MediaConsumer`` authenticates the
line token in its URL, admits the stream under the limits, hands decoded
audio to a ``CallSession`` and answers bad input with an error frame and a
close code (README, "Close codes"). The sections of the class are in this
order: lifecycle, incoming frames, answering, per protocol, channel-layer
handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from callcenter.errors import DuplicateCall, InvalidToken, LineDisabled
from callcenter.live import messages
from callcenter.ops import metrics
from callcenter.streaming import limits, protocols
from callcenter.streaming.partials import engine as partial_engine
from callcenter.streaming.protocols import ProtocolError
from callcenter.streaming.session import CallSession, StreamSettings

logger = logging.getLogger(__name__)


def _line_authenticate(token: str | None) -> tuple[int, str]:
    from callcenter.calls import services

    line = services.line_authenticate(token=token)
    return line.pk, line.name



class MediaConsumer(AsyncWebsocketConsumer):
    """What both media protocols share: the line token, the deadline for the
    stream's first message, error answers, and hangup on close."""

    protocol = ""
    # Whether results go back on the media socket (then it joins the call's group).
    answers_with_results = False

    # --- lifecycle ---

    async def connect(self) -> None:
        self.settings = StreamSettings.from_settings()
        self.closing = False
        self.line_id: int | None = None
        self.limits = limits.Limits.from_settings()
        # Accept first: a close code can only be sent on an open socket.
        await self.accept()
        token = self.scope["url_route"]["kwargs"].get("token") or None
        try:
            self.line_id, line_name = await database_sync_to_async(_line_authenticate)(token)
        except InvalidToken as exc:
            metrics.SOCKETS_REFUSED.labels("bad_token").inc()
            await self._refuse(exc.code, exc.message, protocols.CLOSE_BAD_TOKEN)
            return
        except LineDisabled as exc:
            metrics.SOCKETS_REFUSED.labels("line_disabled").inc()
            await self._refuse(exc.code, exc.message, protocols.CLOSE_LINE_DISABLED)
            return
        try:
            await limits.admit(self.limits)
        except ProtocolError as exc:
            logger.warning("%s media socket refused on line %r: %s", self.protocol, line_name, exc.message)
            await self._refuse(exc.code, exc.message, exc.close_code)
            return
        self._slot_held = True
        # Until the stream says its format: the fastest real-time format's rate.
        fastest = max(protocols.PCM_SAMPLE_RATES)
        self._budget = limits.ByteBudget(
            self.limits.max_speed * limits.realtime_bytes_per_s(protocol="pcm", sample_rate=fastest),
            now=time.monotonic(),
        )
        self._last_frame_at = time.monotonic()
        logger.info("%s media socket opened on line %r", self.protocol, line_name)
        self._start_deadline = self.later(self._expire_start())
        self.later(self._expire_idle())

    async def __call__(self, scope, receive, send) -> None:
        # Daphne (and Channels' test communicator) hands each socket its own
        # asyncio.Queue of incoming frames: its length says how far a client
        # has run ahead of its pace.
        inbox = getattr(receive, "__self__", None)
        self._inbox = inbox if isinstance(inbox, asyncio.Queue) else None
        self._cleaned_up = False
        self._timers: set[asyncio.Task] = set()
        self._slot_held = False
        self.session: CallSession | None = None
        # Whatever ends the consumer (a close, or an error that escaped every
        # handler), its slot, timers and call are given back, once.
        try:
            await super().__call__(scope, receive, send)
        except Exception:
            logger.exception("%s media socket: the consumer failed", self.protocol)
            await self._cleanup(status="failed", reason="internal_error: the consumer failed")
            raise
        finally:
            await self._cleanup(reason="the consumer stopped")

    async def disconnect(self, code: int) -> None:
        await self._cleanup(reason=f"the socket closed without {self.end_event} (code {code})")

    async def _cleanup(self, *, reason: str, status: str = "ended") -> None:
        if self._cleaned_up:
            return
        self._cleaned_up = True
        for timer in list(self._timers):
            if timer is not asyncio.current_task():
                timer.cancel()
        if self._slot_held:
            self._slot_held = False
            limits.SLOTS.release()
        if self.session is not None and not self.session.ended:
            # Abrupt: no stop/eof. Everything received so far is kept.
            await self.session.hangup(status=status, reason=reason)
        if self.answers_with_results and self.session is not None and self.session.call_id is not None:
            await self.channel_layer.group_discard(messages.call_group(self.session.call_id), self.channel_name)

    def later(self, coroutine) -> asyncio.Task:
        """Run a timer of this socket; cancelled when the socket closes."""
        task = asyncio.ensure_future(coroutine)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return task

    async def _expire_start(self) -> None:
        await asyncio.sleep(self.settings.start_timeout_s)
        if self.session is None and not self.closing:
            metrics.SOCKETS_REFUSED.labels("start_timeout").inc()
            await self._refuse(
                "start_timeout",
                f"no {self.start_event} within {self.settings.start_timeout_s:g} s",
                protocols.CLOSE_START_TIMEOUT,
            )

    async def _expire_idle(self) -> None:
        """Close a socket that sent nothing for ``idle_timeout_s`` (the call,
        if any, ends keeping its segments)."""
        while not self.closing:
            if self.session is not None and self.session.ended:
                return  # after stop/eof: the stop grace or the eof wait closes the socket
            idle_for = time.monotonic() - self._last_frame_at
            if idle_for >= self.limits.idle_timeout_s:
                metrics.STREAMS_CUT.labels("idle_timeout").inc()
                await self._fail(
                    "idle_timeout", f"no frame for {self.limits.idle_timeout_s:g} s", limits.CLOSE_TIMEOUT,
                    call_status="ended",
                )  # fmt: skip
                return
            await asyncio.sleep(self.limits.idle_timeout_s - idle_for)

    async def _expire_call(self) -> None:
        await asyncio.sleep(self.limits.max_call_s)
        if not self.closing:
            metrics.STREAMS_CUT.labels("max_duration").inc()
            await self._fail(
                "max_duration", f"the call reached its maximum duration of {self.limits.max_call_s:g} s",
                limits.CLOSE_TIMEOUT, call_status="ended",
            )  # fmt: skip

    async def _begin(
        self,
        *,
        sample_rate: int,
        external_id: str,
        caller: str | None,
        customer_id: str | None,
        agent: str | None = None,
        speakers: tuple[str, ...] = ("customer",),
        vocabulary: tuple[str, ...] = (),
    ) -> CallSession:
        session = CallSession(
            protocol=self.protocol,
            line_id=self.line_id,
            sample_rate=sample_rate,
            stream_settings=self.settings,
            partial_engine=partial_engine(),
            on_partial=self.on_partial,
            speakers=speakers,
        )
        try:
            call_id = await session.open(
                external_id=external_id, caller=caller, customer_external_id=customer_id, agent=agent,
                vocabulary=vocabulary,
            )  # fmt: skip
        except DuplicateCall as exc:
            raise ProtocolError("duplicate_stream", exc.message, protocols.CLOSE_DUPLICATE_STREAM) from None
        self._start_deadline.cancel()
        self.session = session
        self._budget.set_rate(
            self.limits.max_speed
            * limits.realtime_bytes_per_s(protocol=self.protocol, sample_rate=sample_rate, channels=len(speakers)),
            now=time.monotonic(),
        )
        self.later(self._expire_call())
        if self.answers_with_results:
            await self.channel_layer.group_add(messages.call_group(call_id), self.channel_name)
        return session

    # --- incoming frames ---

    async def dispatch(self, message: dict) -> None:
        """Media frames skip Channels' per-message ``close_old_connections``
        (a hop to the database thread, 50 times a second per call): every
        database call here goes through ``database_sync_to_async``, which
        does that itself."""
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            metrics.FRAMES_IGNORED.labels("closing").inc()
            return
        now = self._last_frame_at = time.monotonic()
        try:
            size = len(text_data if text_data is not None else bytes_data or b"")
            # every frame costs at least MIN_FRAME_CHARGE: empty frames, each answered, were never limited
            await self._pace(max(size, limits.MIN_FRAME_CHARGE), now=now)
            if self.closing:
                metrics.FRAMES_IGNORED.labels("closing").inc()
                return
            await self.on_frame(text_data, bytes_data)
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(exc.code).inc()
            logger.info("%s media socket: %s (%s)", self.protocol, exc.message, exc.code)
            await self._fail(exc.code, exc.message, exc.close_code, call_status="failed")
        except Exception:
            logger.exception("%s media socket: internal error", self.protocol)
            await self._fail(
                "internal_error", "internal server error", protocols.CLOSE_INTERNAL_ERROR, call_status="failed"
            )

    async def _pace(self, size: int, *, now: float) -> None:
        """Hold a frame over ``STREAM_MAX_SPEED`` back until it fits; cut a
        client that has queued more than ``MAX_AHEAD_S`` of such waiting."""
        wait = self._budget.take(size, now=now)
        if not wait:
            return
        queued = self._inbox.qsize() if self._inbox is not None else 0
        if wait + queued * size / self._budget.rate > limits.MAX_AHEAD_S:
            metrics.STREAMS_CUT.labels("rate_limited").inc()
            raise limits.rate_exceeded(self.limits)
        await asyncio.sleep(wait)

    # --- answering ---

    async def _refuse(self, code: str, message: str, close_code: int) -> None:
        """Close before any call exists."""
        self.closing = True
        await self.send(self.error_frame(code, message))
        await self.close(code=close_code)

    async def _fail(self, code: str, message: str, close_code: int, *, call_status: str) -> None:
        """Answer bad input or an internal error, close, and close the call
        (keeping the segments it has)."""
        self.closing = True
        try:
            await self.send(self.error_frame(code, message))
            await self.close(code=close_code)
        finally:
            # Even when the socket cannot be closed cleanly (Daphne refuses to
            # send 1011 itself), the call is closed with its segments.
            if self.session is not None and not self.session.ended:
                await self.session.hangup(status=call_status, reason=f"{code}: {message}")

    # --- per protocol ---

    start_event = "start"
    end_event = "stop"

    def error_frame(self, code: str, message: str) -> str:
        raise NotImplementedError

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    async def on_partial(self, message: Mapping[str, object]) -> None:
        """A partial hypothesis of this call (it also goes to the agents)."""

    # --- channel-layer handlers ---

    async def transcript_message(self, event: dict) -> None:
        """Messages of this call's group; protocols that answer on the socket use finals."""
