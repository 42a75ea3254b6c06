"""Twilio Media Streams consumer: ``wss://host/ws/media/twilio/<line token>``."""

from __future__ import annotations

import asyncio
import logging

from callcenter.streaming import protocols
from callcenter.streaming.codecs import mulaw_to_float
from callcenter.streaming.consumers.base import MediaConsumer
from callcenter.streaming.endpointer import SegmentEnded, SpeechStarted
from callcenter.streaming.protocols import ProtocolError

logger = logging.getLogger(__name__)


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
                elif isinstance(event, SegmentEnded):
                    await self.send(protocols.twilio_mark(stream_sid=self.stream_sid, name=f"segment-{event.serial}"))

    async def _close_after_stop(self) -> None:
        await asyncio.sleep(self.settings.stop_grace_s)
        if not self.closing:
            self.closing = True
            await self.close(code=protocols.CLOSE_NORMAL)
