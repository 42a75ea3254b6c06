"""Twilio Media Streams (JSON text frames, wire-compatible with Twilio), as
pure functions: text in, typed events out; events in, text out. The frames
are listed in ``callcenter.streaming.protocols``."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from callcenter.streaming.protocols.common import (
    CLOSE_UNSUPPORTED_MEDIA,
    MAX_PARAMETER_LENGTH,
    MAX_PARAMETERS,
    ProtocolError,
    _counter,
    _load_json,
    _object,
    _string,
    phrases_clean,
)

TWILIO_ENCODING = "audio/x-mulaw"
TWILIO_SAMPLE_RATE = 8000
TWILIO_TRACKS = ("inbound", "outbound")

# Custom parameters (<Parameter name=".." value=".."/>) we read, compared
# case-insensitively: the caller's number, the customer's id, the username
# of the agent the call is for, and whether the stream is bidirectional
# (then we send mark/clear back).
CALLER_PARAMETERS = ("caller", "from", "phone", "caller_number", "callernumber")
CUSTOMER_ID_PARAMETERS = ("customer_id", "customerid", "customer")
AGENT_PARAMETERS = ("agent",)
MARKS_PARAMETERS = ("marks", "bidirectional")
# Words and product names to favour: comma- or newline-separated.
VOCABULARY_PARAMETERS = ("vocabulary", "phrase_list", "phrases")

# Which party each track carries.
TRACK_SPEAKERS = {"inbound": "customer", "outbound": "agent"}


@dataclass(frozen=True)
class TwilioConnected:
    protocol: str
    version: str


@dataclass(frozen=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    sequence: int | None = None
    phrase_list: tuple[str, ...] = ()  # from the custom parameter 'vocabulary' (or 'phrase_list', 'phrases')

    def parameter(self, names: Sequence[str]) -> str | None:
        lowered = {k.lower(): v for k, v in self.custom_parameters.items()}
        for name in names:
            if lowered.get(name, "").strip():
                return lowered[name].strip()
        return None

    @property
    def caller(self) -> str | None:
        return self.parameter(CALLER_PARAMETERS)

    @property
    def customer_id(self) -> str | None:
        return self.parameter(CUSTOMER_ID_PARAMETERS)

    @property
    def agent(self) -> str | None:
        return self.parameter(AGENT_PARAMETERS)

    @property
    def wants_marks(self) -> bool:
        return (self.parameter(MARKS_PARAMETERS) or "").lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class TwilioMedia:
    track: str
    chunk: int | None
    timestamp_ms: int | None
    payload: bytes  # mu-law bytes, 8 kHz mono
    sequence: int | None = None


@dataclass(frozen=True)
class TwilioDtmf:
    track: str
    digit: str


@dataclass(frozen=True)
class TwilioMark:
    name: str


@dataclass(frozen=True)
class TwilioStop:
    call_sid: str


TwilioEvent = TwilioConnected | TwilioStart | TwilioMedia | TwilioDtmf | TwilioMark | TwilioStop


def twilio_parse(text: str | bytes | None, *, max_bytes: int = 65536) -> TwilioEvent:
    """One Twilio Media Streams frame -> its event."""
    message = _load_json(text, max_bytes=max_bytes)
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("missing_event", "a Twilio message needs an 'event' string")
    parser = _TWILIO_PARSERS.get(event)
    if parser is None:
        raise ProtocolError("unknown_event", f"unknown event {event[:40]!r}")
    return parser(message)


def _twilio_connected(message: Mapping) -> TwilioConnected:
    return TwilioConnected(
        protocol=_string(message.get("protocol"), "protocol", required=False),
        version=_string(message.get("version"), "version", required=False),
    )


def _twilio_start(message: Mapping) -> TwilioStart:
    start = _object(message, "start")
    stream_sid = _string(start.get("streamSid", message.get("streamSid")), "start.streamSid")
    fmt = _object(start, "mediaFormat")
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels", 1)
    if encoding != TWILIO_ENCODING or rate != TWILIO_SAMPLE_RATE or channels != 1:
        raise ProtocolError(
            "unsupported_media_format",
            f"media format must be {TWILIO_ENCODING} at {TWILIO_SAMPLE_RATE} Hz, 1 channel; "
            f"got {str(encoding)[:40]!r} at {str(rate)[:10]} Hz, {str(channels)[:5]} channel(s)",
            close_code=CLOSE_UNSUPPORTED_MEDIA,
        )
    tracks = start.get("tracks", ["inbound"])
    if (
        not isinstance(tracks, list)
        or not tracks
        or any(not isinstance(t, str) or t not in TWILIO_TRACKS for t in tracks)
    ):
        raise ProtocolError("invalid_message", "start.tracks must be a list of 'inbound' and/or 'outbound'")
    raw_parameters = start.get("customParameters") or {}
    if not isinstance(raw_parameters, dict) or len(raw_parameters) > MAX_PARAMETERS:
        raise ProtocolError(
            "invalid_message", f"start.customParameters must be an object of at most {MAX_PARAMETERS} entries"
        )
    parameters = {
        _string(k, "a custom parameter name", max_length=MAX_PARAMETER_LENGTH): _string(
            v, f"custom parameter {str(k)[:40]!r}", max_length=MAX_PARAMETER_LENGTH, required=False
        )
        for k, v in raw_parameters.items()
    }
    lowered = {k.lower(): v for k, v in parameters.items()}
    vocabulary = next((lowered[n] for n in VOCABULARY_PARAMETERS if lowered.get(n, "").strip()), "")
    return TwilioStart(
        phrase_list=phrases_clean(re.split(r"[,\n]", vocabulary), what="the custom parameter 'vocabulary'"),
        stream_sid=stream_sid,
        call_sid=_string(start.get("callSid"), "start.callSid", required=False),
        account_sid=_string(start.get("accountSid"), "start.accountSid", required=False),
        tracks=tuple(tracks),
        custom_parameters=parameters,
        sequence=_counter(message.get("sequenceNumber"), "sequenceNumber"),
    )


def _twilio_media(message: Mapping) -> TwilioMedia:
    media = _object(message, "media")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("bad_payload", "media.payload must be a base64 string")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64", "media.payload is not valid base64") from None
    track = media.get("track", "inbound")
    if track not in TWILIO_TRACKS:
        raise ProtocolError("invalid_message", f"media.track must be 'inbound' or 'outbound', got {str(track)[:20]!r}")
    return TwilioMedia(
        track=track,
        chunk=_counter(media.get("chunk"), "media.chunk"),
        timestamp_ms=_counter(media.get("timestamp"), "media.timestamp"),
        payload=audio,
        sequence=_counter(message.get("sequenceNumber"), "sequenceNumber"),
    )


def _twilio_dtmf(message: Mapping) -> TwilioDtmf:
    dtmf = _object(message, "dtmf")
    digit = _string(dtmf.get("digit"), "dtmf.digit", max_length=1)
    if digit not in "0123456789*#ABCD":
        raise ProtocolError("invalid_message", f"dtmf.digit must be 0-9, *, # or A-D, got {digit!r}")
    return TwilioDtmf(track=_string(dtmf.get("track"), "dtmf.track", required=False), digit=digit)


def _twilio_mark(message: Mapping) -> TwilioMark:
    return TwilioMark(name=_string(_object(message, "mark").get("name"), "mark.name", max_length=MAX_PARAMETER_LENGTH))


def _twilio_stop(message: Mapping) -> TwilioStop:
    stop = _object(message, "stop", required=False)
    return TwilioStop(call_sid=_string(stop.get("callSid"), "stop.callSid", required=False))


_TWILIO_PARSERS = {
    "connected": _twilio_connected,
    "start": _twilio_start,
    "media": _twilio_media,
    "dtmf": _twilio_dtmf,
    "mark": _twilio_mark,
    "stop": _twilio_stop,
}


def twilio_mark(*, stream_sid: str, name: str) -> str:
    """A ``mark`` for Twilio: echoed back once the audio sent before it has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def twilio_clear(*, stream_sid: str) -> str:
    """``clear``: Twilio drops the audio it has buffered for playback (barge-in)."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def twilio_error(*, code: str, message: str) -> str:
    """What we answer a malformed frame with, just before closing (Twilio itself
    never sends malformed frames; this is for other clients of the protocol)."""
    return json.dumps({"event": "error", "code": code, "message": message})
