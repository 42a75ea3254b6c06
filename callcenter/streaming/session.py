"""One live call, whatever protocol brought its audio.

``CallSession`` is what both media consumers share: it opens the call
(finding or creating the customer), feeds decoded audio to the endpointer
of its track, opens a segment row at speech onset (so partials carry the
segment's id), stores each segment's audio once at its endpoint and queues
its recognition after commit, asks for partial hypotheses, publishes
messages to the agents, and closes the call at hangup, flushing the
segments in progress first.

A call has one track per party it hears: the customer's (Twilio
``inbound``, PCM channel 0) and, on two-track streams, the agent's (Twilio
``outbound``, PCM channel 1). Each track has its own endpointer and
partials; segments of both share the call's index sequence (in order of
onset) and store their speaker. Only the customer's track uses the
customer's voice profile.

Everything blocking goes through ``database_sync_to_async``; the model runs
on the partials thread or in the Celery worker, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from callcenter import logs
from callcenter.ops import metrics
from callcenter.live import messages
from callcenter.streaming import speculation
from callcenter.streaming.endpointer import (
    Endpointer,
    EndpointerConfig,
    Event,
    SegmentEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)
from callcenter.streaming.liveness import LIVE_CALLS
from callcenter.streaming.partials import CallPartials, PartialEngine

logger = logging.getLogger(__name__)

# Calls being closed (`CallSession.hangup`): held here so that a closing whose caller was
# cancelled is not collected before it ends.
_CLOSING: set[asyncio.Task] = set()


@dataclass(frozen=True)
class StreamSettings:
    """What the media sockets are configured with (from the Django settings)."""

    silence_ms: int = 600
    max_segment_ms: int = 15_000
    min_speech_ms: int = 200
    threshold_db: int = -45
    partial_interval_ms: int = 500
    max_frame_bytes: int = 65_536
    start_timeout_s: float = 10.0
    eof_wait_s: float = 30.0
    stop_grace_s: float = 1.0
    speculative_finals: bool = True

    @classmethod
    def from_settings(cls) -> StreamSettings:
        return cls(
            silence_ms=settings.STREAM_SILENCE_MS,
            max_segment_ms=settings.STREAM_MAX_SEGMENT_MS,
            min_speech_ms=settings.STREAM_MIN_SPEECH_MS,
            threshold_db=settings.STREAM_ENERGY_THRESHOLD_DB,
            partial_interval_ms=settings.STREAM_PARTIAL_INTERVAL_MS,
            max_frame_bytes=settings.STREAM_MAX_FRAME_BYTES,
            start_timeout_s=settings.STREAM_START_TIMEOUT_S,
            eof_wait_s=settings.STREAM_EOF_WAIT_S,
            speculative_finals=settings.STREAM_SPECULATIVE_FINALS,
        )

    def endpointer_config(self, sample_rate: int) -> EndpointerConfig:
        return EndpointerConfig(
            sample_rate=sample_rate,
            silence_ms=self.silence_ms,
            max_segment_ms=self.max_segment_ms,
            min_speech_ms=self.min_speech_ms,
            tail_ms=min(300, self.silence_ms),
            threshold_db=float(self.threshold_db),
        )


# --- database work, in the sync thread ------------------------------------


def _call_open(
    *,
    protocol: str,
    line_id: int,
    external_id: str,
    caller: str | None,
    customer_external_id: str | None,
    agent: str | None = None,
    vocabulary: Sequence[str] = (),
) -> tuple[int, int | None, str | None, str | None]:
    """(call id, customer id, the caller's number in E.164 where it is one,
    the username of the agent the call is assigned to). An agent username
    that names no agent leaves the call in the unassigned queue."""
    from django.db import transaction

    from callcenter.calls import selectors, services

    # One transaction: a stream refused as a duplicate (DuplicateCall from call_start) leaves the
    # customers as they were (the caller's lookup may create one or give one its external id).
    with transaction.atomic():
        customer = services.customer_for_caller(caller=caller, customer_external_id=customer_external_id)
        assigned = selectors.agent_by_username(username=agent) if agent else None
        if agent and assigned is None:
            logger.warning(
                "the stream names agent %r, who does not exist: the call goes to the unassigned queue", agent
            )
        call = services.call_start(
            protocol=protocol,
            external_id=external_id,
            line_id=line_id,
            customer_id=customer.pk if customer else None,
            agent_id=assigned.pk if assigned else None,
            vocabulary=vocabulary,
        )
    return call.pk, call.customer_id, customer.phone if customer else caller, agent if assigned else None


def _segment_open(*, call_id: int, index: int, start_ms: int, speaker: str) -> int:
    from callcenter.asr import STORED_SAMPLE_RATE
    from callcenter.calls import services

    return services.segment_create(
        call_id=call_id, index=index, start_ms=start_ms, end_ms=start_ms, sample_rate=STORED_SAMPLE_RATE,
        speaker=speaker,
    ).pk  # fmt: skip


def _segment_finish(*, segment_id: int, event: SegmentEnded, sample_rate: int, endpoint_at: float) -> None:
    from callcenter.asr import wav_bytes
    from callcenter.calls import services

    services.segment_finish(
        segment_id=segment_id,
        end_ms=event.end_ms,
        audio=wav_bytes(event.audio, sample_rate),
        endpoint_at=endpoint_at,
        speech_start_ms=event.speech_start_ms,
        speech_end_ms=event.speech_end_ms,
    )


def _segment_speculate(*, segment_id: int, audio: np.ndarray, sample_rate: int) -> bool:
    from callcenter.asr import wav_bytes

    return speculation.offer(segment_id=segment_id, wav=wav_bytes(audio, sample_rate))


def _call_end(*, call_id: int, status: str, reason: str) -> str | None:
    """Close the call; the username of its agent (it may have been taken meanwhile)."""
    from callcenter.calls import services

    call = services.call_end(call_id=call_id, status=status, failure_reason=reason)
    return call.agent.user.get_username() if call.agent_id else None


# --- the session -----------------------------------------------------------


SPEAKERS = ("customer", "agent")


class _Track:
    """One party's audio in a call: its endpointer, its partials and its
    segments in progress."""

    def __init__(self, speaker: str, endpointer: Endpointer, partials: CallPartials | None) -> None:
        self.speaker = speaker
        self.endpointer = endpointer
        self.partials = partials
        self.open_segments: dict[int, int] = {}  # endpointer serial -> id of the segment row opened at its onset
        self.indexes: dict[int, int] = {}  # endpointer serial -> the segment's index in the call
        self.start_ms: dict[int, int] = {}  # serial -> start (ms in the call) of the segment in progress
        self.last_partial_text = ""
        self.offered: int | None = None  # segment id whose speculative final is offered


class CallSession:
    def __init__(
        self,
        *,
        protocol: str,
        line_id: int,
        sample_rate: int,
        stream_settings: StreamSettings,
        partial_engine: PartialEngine | None,
        on_partial: Callable[[Mapping[str, object]], Awaitable[None]] | None = None,
        speakers: Sequence[str] = ("customer",),
    ) -> None:
        if not speakers or len(set(speakers)) != len(speakers) or any(s not in SPEAKERS for s in speakers):
            raise ValueError(f"speakers must be distinct values of {SPEAKERS}, got {tuple(speakers)!r}")
        self.protocol = protocol
        self.line_id = line_id
        self.sample_rate = sample_rate
        self.call_id: int | None = None
        self.customer_id: int | None = None
        self.caller: str | None = None
        self.agent: str | None = None
        self.ended = False
        with_partials = partial_engine is not None and stream_settings.partial_interval_ms > 0
        self.tracks = {
            speaker: _Track(
                speaker,
                Endpointer(stream_settings.endpointer_config(sample_rate)),
                CallPartials(partial_engine, sample_rate=sample_rate,
                             interval_s=stream_settings.partial_interval_ms / 1000) if with_partials else None,
            )  # fmt: skip
            for speaker in speakers
        }
        self._next_index = 0
        self.speculate = stream_settings.speculative_finals
        # ids of the segments queued for recognition, in order
        self.submitted: list[int] = []
        self._on_partial = on_partial
        self._tasks: set[asyncio.Task] = set()
        self._layer = get_channel_layer()

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(self.tracks)

    # --- lifecycle ---

    async def open(
        self,
        *,
        external_id: str = "",
        caller: str | None,
        customer_external_id: str | None,
        agent: str | None = None,
        vocabulary: Sequence[str] = (),
    ) -> int:
        """Record the call; raises ``DuplicateCall`` for a stream id seen before. ``vocabulary``:
        the stream's words and names to favour (the line's come first)."""
        self.call_id, self.customer_id, self.caller, self.agent = await database_sync_to_async(_call_open)(
            protocol=self.protocol,
            line_id=self.line_id,
            external_id=external_id,
            caller=caller,
            customer_external_id=customer_external_id,
            agent=agent,
            vocabulary=vocabulary,
        )
        customer = self.tracks.get("customer")
        if customer is not None and customer.partials is not None:
            # The customer's voice profile shapes the customer's partials only.
            customer.partials.customer_id = self.customer_id
        metrics.CALLS.labels(self.protocol).inc()
        metrics.CALLS_LIVE.inc()
        logs.bind(call=self.call_id)
        LIVE_CALLS.add(self.call_id)
        logger.info(
            "call #%s opened (%s, caller %s, customer %s, tracks %s)",
            self.call_id, self.protocol, self.caller, self.customer_id, "+".join(self.tracks),
        )  # fmt: skip
        await self._publish_call_status("live")
        return self.call_id

    async def hangup(self, *, status: str = "ended", reason: str = "") -> None:
        """End of the call (stop, eof, socket closed): flush the segments in
        progress, then close the call. Safe to call twice."""
        if self.call_id is None or self.ended:
            return
        self.ended = True
        for task in self._tasks:
            task.cancel()
        # The closing runs to its end even when the task that asked for it is cancelled meanwhile:
        # a socket's timer (idle, maximum duration) closes the socket and then hangs up, and the
        # disconnect that the close brings cancels the socket's timers. Cut in the middle, the call
        # stayed live for the agents, the gauge and the liveness key, its last segment unstored.
        closing = asyncio.ensure_future(self._close(status, reason))
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        await asyncio.shield(closing)

    async def _close(self, status: str, reason: str) -> None:
        """hangup's work: the segments in progress stored, then the call closed."""
        try:
            for track in self.tracks.values():
                await self._handle(track, track.endpointer.flush())
        except Exception:
            logger.exception("call #%s: could not store the last segment at hangup", self.call_id)
            status, reason = "failed", reason or "the last segment could not be stored"
        finally:
            try:
                self.agent = await database_sync_to_async(_call_end)(call_id=self.call_id, status=status, reason=reason)
            except Exception:
                logger.exception("call #%s: could not be closed", self.call_id)
            metrics.CALLS_LIVE.dec()
            LIVE_CALLS.discard(self.call_id)
            logger.info(
                "call #%s %s (%d segments)%s",
                self.call_id,
                status,
                len(self.submitted),
                f": {reason}" if reason else "",
            )
            await self._publish_call_status(status)

    # --- audio ---

    async def feed(self, audio: np.ndarray, *, speaker: str = "customer") -> list[Event]:
        """Decoded audio of one party at the session's sample rate, in arrival order."""
        track = self.tracks.get(speaker)
        if track is None:
            raise ValueError(f"this call has no {speaker!r} track (it has {', '.join(self.tracks)})")
        events = track.endpointer.push(audio)
        await self._handle(track, events)
        self._request_partial(track)
        return events

    async def _handle(self, track: _Track, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                index = self._next_index
                self._next_index += 1
                segment_id = await database_sync_to_async(_segment_open)(
                    call_id=self.call_id, index=index, start_ms=event.start_ms, speaker=track.speaker
                )
                track.open_segments[event.serial] = segment_id
                track.indexes = {event.serial: index}
                track.start_ms = {event.serial: event.start_ms}
                if track.partials is not None:
                    track.partials.reset(event.serial)
                track.last_partial_text = ""
            elif isinstance(event, SegmentEnded):
                segment_id = track.open_segments.pop(event.serial)
                track.offered = None
                if track.partials is not None:
                    track.partials.reset(None)
                await database_sync_to_async(_segment_finish)(
                    segment_id=segment_id, event=event, sample_rate=self.sample_rate, endpoint_at=time.time()
                )
                self.submitted.append(segment_id)
                metrics.SEGMENTS.labels(event.reason).inc()
            elif isinstance(event, SpeechPaused):
                segment_id = track.open_segments.get(event.serial)
                if self.speculate and segment_id is not None and not self.ended:
                    offered = await database_sync_to_async(_segment_speculate)(
                        segment_id=segment_id, audio=event.audio, sample_rate=self.sample_rate
                    )
                    track.offered = segment_id if offered else None
            elif isinstance(event, SpeechResumed):
                if track.offered is not None:
                    segment_id, track.offered = track.offered, None
                    await database_sync_to_async(speculation.withdraw)(segment_id=segment_id)

    # --- partials ---

    def _request_partial(self, track: _Track) -> None:
        if track.partials is None or self.ended or not track.endpointer.in_speech:
            return
        if track.endpointer.paused and track.last_partial_text:
            return  # past the tail of a pause: new audio is silence the segment will not keep
        serial = track.endpointer.serial
        job = track.partials.request(segment_audio=track.endpointer.segment_audio, now=time.monotonic())
        if job is None:
            return
        task = asyncio.ensure_future(
            self._deliver_partial(track, job, serial, track.open_segments[serial], time.time())
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_partial(
        self, track: _Track, job: asyncio.Future, serial: int, segment_id: int, audio_at: float
    ) -> None:
        try:
            transcript, seconds = await job
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("call #%s: partial hypothesis failed", self.call_id)
            metrics.PARTIALS.labels("error").inc()
            if track.partials is not None:
                track.partials.restart(serial)  # its stream may hold half of what failed
            return
        metrics.PARTIAL_SECONDS.observe(seconds)
        if self.ended or track.partials is None or track.partials.serial != serial:
            metrics.PARTIALS.labels("stale").inc()
            return
        text = transcript.text.strip()
        if not text or text == track.last_partial_text:
            return
        track.last_partial_text = text
        message = messages.partial_message(
            call_id=self.call_id,
            segment_id=segment_id,
            index=track.indexes.get(serial, serial),
            text=text,
            words=transcript.as_dict()["words"],
            audio_at=audio_at,
            start_ms=track.start_ms.get(serial),
            profile_id=track.partials.profile_id,
            speaker=track.speaker,
        )
        metrics.PARTIALS.labels("sent").inc()
        if self._on_partial is not None:
            await self._on_partial(message)
        await self.publish(message)

    # --- to the agents ---

    async def publish(self, message: Mapping[str, object]) -> None:
        """Send a message to the call's group and the agents' group; a
        channel-layer failure is logged, the call goes on."""
        if self.call_id is None:
            return
        event = messages.layer_event(message)
        try:
            for group in messages.groups_for_call(self.call_id):
                await self._layer.group_send(group, event)
        except Exception:
            logger.exception("call #%s: could not publish a %s message", self.call_id, message.get("type"))

    async def _publish_call_status(self, status: str) -> None:
        await self.publish(
            messages.call_message(
                call_id=self.call_id,
                status=status,
                protocol=self.protocol,
                customer_id=self.customer_id,
                caller=self.caller,
                agent=self.agent,
            )
        )
