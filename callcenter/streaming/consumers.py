"""Websocket consumers of the media endpoints, one per protocol (the agents'
feed is ``dashboard.consumers``).

Each media consumer authenticates the line token in its URL, parses frames
with ``protocols`` (pure functions), hands decoded audio to a
``CallSession`` and answers bad input with an error frame and a close code
(README, "Close codes"). The sections of each class are in this order:
lifecycle, incoming frames, channel-layer handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from callcenter.ops import metrics
from callcenter.errors import DuplicateCall, InvalidToken, LineDisabled
from callcenter.live import messages
from callcenter.streaming import limits, protocols
from callcenter.streaming.codecs import mulaw_to_float, pcm16_to_float
from callcenter.streaming.endpointer import SegmentEnded, SpeechStarted
from callcenter.streaming.partials import engine as partial_engine
from callcenter.streaming.protocols import ProtocolError
from callcenter.streaming.session import CallSession, StreamSettings

logger = logging.getLogger(__name__)


def _line_authenticate(token: str | None) -> tuple[int, str]:
    from callcenter.calls import services

    line = services.line_authenticate(token=token)
    return line.pk, line.name


def _segment_results(segment_ids: list[int]) -> list[dict]:
    from callcenter.calls import selectors

    return [
        {"segment": s.pk, "status": s.status, "text": s.text, "words": s.words, "start_ms": s.start_ms}
        for s in selectors.segments_by_id(segment_ids=segment_ids)
    ]


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
            await self._pace(len(text_data if text_data is not None else bytes_data or b""), now=now)
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


class TwilioMediaConsumer(MediaConsumer):
    """Twilio Media Streams: ``wss://host/ws/media/twilio/<line token>``.

    Each track the start lists is transcribed: ``inbound`` is the caller
    (the customer), ``outbound`` the agent side (``<Stream
    track="both_tracks">``), each with its own endpointer. A media frame of
    a track the start did not list is an error. With the custom parameter
    ``marks=true`` (bidirectional streams), the consumer sends ``clear``
    when the caller starts speaking (barge-in) and a ``mark`` named
    ``segment-<serial>`` at each of the caller's endpoints.
    """

    protocol = "twilio"
    # Twilio gets no results on its socket: no channel-layer inbox for it
    # (one less Redis reader per call); the session publishes to the agents.
    channel_layer_alias = None

    def error_frame(self, code: str, message: str) -> str:
        return protocols.twilio_error(code=code, message=message)

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None and len(bytes_data) > self.settings.max_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"frame is larger than {self.settings.max_frame_bytes} bytes",
                protocols.CLOSE_FRAME_TOO_LARGE,
            )
        event = protocols.twilio_parse(
            text_data if text_data is not None else bytes_data, max_bytes=self.settings.max_frame_bytes
        )
        stopped = self.session is not None and self.session.ended
        if stopped and not isinstance(event, protocols.TwilioMark):
            raise ProtocolError("frame_after_stop", f"{type(event).__name__[6:].lower()} after stop")

        if isinstance(event, protocols.TwilioConnected):
            return
        if isinstance(event, protocols.TwilioStart):
            if self.session is not None:
                raise ProtocolError("duplicate_start", "a stream has one start message")
            self.stream_sid = event.stream_sid
            self.send_marks = event.wants_marks
            self.tracks = tuple(dict.fromkeys(event.tracks))
            await self._begin(
                sample_rate=protocols.TWILIO_SAMPLE_RATE,
                external_id=event.stream_sid,
                caller=event.caller,
                customer_id=event.customer_id,
                agent=event.agent,
                speakers=tuple(protocols.TRACK_SPEAKERS[t] for t in self.tracks),
                vocabulary=event.phrase_list,
            )
            return
        if self.session is None:
            raise ProtocolError("start_expected", f"{type(event).__name__[6:].lower()} before start")
        if isinstance(event, protocols.TwilioMedia):
            if event.track not in self.tracks:
                raise ProtocolError(
                    "track_not_announced",
                    f"media of the {event.track!r} track, which the start did not list (tracks: "
                    f"{', '.join(self.tracks)}; both_tracks lists inbound and outbound)",
                )
            await self._media(event.payload, speaker=protocols.TRACK_SPEAKERS[event.track])
        elif isinstance(event, protocols.TwilioDtmf):
            await self.session.publish({"type": "dtmf", "call": self.session.call_id, "digit": event.digit})
        elif isinstance(event, protocols.TwilioMark):
            logger.debug("call #%s: mark %r played", self.session.call_id, event.name)
        elif isinstance(event, protocols.TwilioStop):
            await self.session.hangup()
            # Twilio closes the socket after stop; close it ourselves if it does not.
            self.later(self._close_after_stop())

    async def _media(self, payload: bytes, *, speaker: str) -> None:
        events = await self.session.feed(mulaw_to_float(payload), speaker=speaker)
        if self.send_marks and speaker == "customer":
            for event in events:
                if isinstance(event, SpeechStarted):
                    await self.send(protocols.twilio_clear(stream_sid=self.stream_sid))
                else:
                    await self.send(protocols.twilio_mark(stream_sid=self.stream_sid, name=f"segment-{event.serial}"))

    async def _close_after_stop(self) -> None:
        await asyncio.sleep(self.settings.stop_grace_s)
        if not self.closing:
            self.closing = True
            await self.close(code=protocols.CLOSE_NORMAL)


class PcmMediaConsumer(MediaConsumer):
    """Plain PCM, vosk-server compatible: ``wss://host/ws/media/pcm/<line token>``.

    Like vosk-server, it answers every audio frame with exactly one message
    (the next final result not yet delivered, else the current partial) and
    ``{"eof": 1}`` with one message: every result not yet delivered, joined,
    once the worker has recognized the last segments; then it closes.

    ``"channels": 2`` in the config: frames are interleaved stereo PCM16,
    channel 0 the customer, channel 1 the agent; each channel gets its own
    endpointer, and each result and word says its ``speaker``.
    """

    protocol = "pcm"
    answers_with_results = True
    start_event = "config"
    end_event = "eof"

    async def connect(self) -> None:
        self.config: protocols.PcmConfig | None = None
        self.eof = False
        self.partial_text = ""
        self.pending: deque[dict] = deque()  # finals not yet sent, in order
        self.done: dict[int, dict] = {}  # segment id -> its final
        self.delivered: set[int] = set()
        self._eof_deadline: asyncio.Task | None = None
        await super().connect()

    def error_frame(self, code: str, message: str) -> str:
        return protocols.pcm_error(code=code, message=message)

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            channels = self.config.channels if self.config is not None else 1
            frame = protocols.pcm_check_audio(bytes_data, max_bytes=self.settings.max_frame_bytes, channels=channels)
            if self.eof:
                raise ProtocolError("frame_after_eof", "audio after eof")
            if self.session is None:
                raise ProtocolError("config_expected", "send the JSON config before audio")
            samples = pcm16_to_float(frame)
            events = []
            for channel, speaker in enumerate(self.session.speakers):
                # (samples,) interleaved -> this channel's (samples / channels,)
                events += await self.session.feed(samples[channel::channels], speaker=speaker)
            if any(isinstance(e, SegmentEnded) for e in events):
                self.partial_text = ""
            await self.send(self._reply())
            return
        message = protocols.pcm_parse_text(text_data, max_bytes=self.settings.max_frame_bytes)
        if self.eof:
            raise ProtocolError("frame_after_eof", "message after eof")
        if isinstance(message, protocols.PcmConfig):
            if self.session is not None:
                raise ProtocolError("duplicate_config", "the config is sent once, first")
            self.config = message
            await self._begin(
                sample_rate=message.sample_rate,
                external_id="",
                caller=message.caller,
                customer_id=message.customer_id,
                agent=message.agent,
                speakers=protocols.CHANNEL_SPEAKERS[: message.channels],
                vocabulary=message.phrase_list,
            )
            return
        if self.session is None:
            raise ProtocolError("config_expected", "send the JSON config first")
        await self._eof()

    async def on_partial(self, message: Mapping[str, object]) -> None:
        self.partial_text = str(message["text"])

    def _reply(self) -> str:
        if self.pending:
            final = self.pending.popleft()
            self.delivered.add(final["segment"])
            return self._result([final])
        return protocols.pcm_partial(text=self.partial_text)

    def _result(self, finals: list[Mapping]) -> str:
        two = self.config.channels == 2
        words = [
            {
                **w,
                "start": round(f["start_ms"] / 1000 + w["start"], 3),
                "end": round(f["start_ms"] / 1000 + w["end"], 3),
                **({"speaker": f.get("speaker", "customer")} if two else {}),
            }
            for f in finals
            for w in f["words"]
        ]
        text = " ".join(str(f["text"]) for f in finals if f["text"])
        speakers = {f.get("speaker", "customer") for f in finals}
        speaker = next(iter(speakers)) if two and len(speakers) == 1 else None
        return protocols.pcm_result(text=text, words=words, with_words=self.config.words, speaker=speaker)

    # --- eof: wait for the last finals, answer once, close ---

    async def _eof(self) -> None:
        self.eof = True
        await self.session.hangup()
        self._eof_deadline = self.later(self._expire_eof())
        await self._finish_eof_if_done()

    async def _finish_eof_if_done(self) -> None:
        if self.closing or not all(sid in self.done for sid in self.session.submitted):
            return
        await self._answer_eof()

    async def _expire_eof(self) -> None:
        await asyncio.sleep(self.settings.eof_wait_s)
        if self.closing:
            return
        missing = [sid for sid in self.session.submitted if sid not in self.done]
        logger.warning("call #%s: %d segment(s) not recognized %g s after eof", self.session.call_id, len(missing),
                       self.settings.eof_wait_s)  # fmt: skip
        # The database is the record: take what the worker stored meanwhile.
        for row in await database_sync_to_async(_segment_results)(missing):
            if row["status"] == "recognized":
                self.done[row["segment"]] = row
        await self._answer_eof()

    async def _answer_eof(self) -> None:
        self.closing = True
        if self._eof_deadline is not None and self._eof_deadline is not asyncio.current_task():
            self._eof_deadline.cancel()
        finals = [self.done[sid] for sid in self.session.submitted if sid in self.done and sid not in self.delivered]
        await self.send(self._result(finals))
        await self.close(code=protocols.CLOSE_NORMAL)

    # --- channel-layer handlers ---

    async def transcript_message(self, event: dict) -> None:
        message = event["message"]
        if message.get("type") != "final" or self.session is None or message.get("call") != self.session.call_id:
            return
        segment_id = message["segment"]
        if segment_id in self.done:
            return  # a re-run of the task: delivered once
        final = message if message.get("status") == "recognized" else {**message, "text": "", "words": []}
        self.done[segment_id] = final
        if self.eof:
            await self._finish_eof_if_done()
        else:
            self.pending.append(final)
