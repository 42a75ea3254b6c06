"""The media websocket protocols, as pure functions: text or bytes in, typed
events out; events in, text out. No sockets, no Django.

Twilio Media Streams (JSON text frames, wire-compatible with Twilio)::

    {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    {"event": "start", "sequenceNumber": "1", "streamSid": "MZ..", "start": {"streamSid": "MZ..",
     "callSid": "CA..", "accountSid": "AC..", "tracks": ["inbound"], "customParameters": {"caller": "+1555.."},
     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    {"event": "media", "sequenceNumber": "2", "streamSid": "MZ..",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "<base64 mu-law>"}}
    {"event": "dtmf", "streamSid": "MZ..", "dtmf": {"track": "inbound_track", "digit": "1"}}
    {"event": "mark", "streamSid": "MZ..", "mark": {"name": "segment-0"}}
    {"event": "stop", "sequenceNumber": "9", "streamSid": "MZ..", "stop": {"callSid": "CA.."}}

and back to Twilio (bidirectional streams): ``mark`` and ``clear``.

With ``<Stream track="both_tracks">`` the start lists ``"tracks": ["inbound",
"outbound"]`` and media frames come for both: ``inbound`` is the caller (the
customer), ``outbound`` the agent side. A media frame of a track the start
did not list, or of a track that is neither, is an error.

Plain PCM (vosk-server compatible): a JSON config first
(``{"config": {"sample_rate": 8000}}``), binary PCM16 little-endian frames,
``{"eof": 1}`` at the end; answers ``{"partial": ".."}`` and
``{"text": "..", "result": [{"word", "start", "end", "conf"}]}``. With
``"channels": 2`` the frames are interleaved stereo (channel 0 the
customer, channel 1 the agent; every frame a whole number of sample pairs).
``"phrase_list"`` (vosk's key) lists words and product names to favour.

Every malformed input raises ``ProtocolError`` with a stable code and the
websocket close code the consumer ends the connection with.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from callcenter.errors import InvalidInput

# --- Close codes (documented in the README) ---------------------------------

CLOSE_NORMAL = 1000
# Daphne only sends 1000 and 3000-4999 itself: an internal error has a code
# in the application range (the websocket form of HTTP 500).
CLOSE_INTERNAL_ERROR = 4500
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_BAD_TOKEN = 4401
CLOSE_LINE_DISABLED = 4403
CLOSE_START_TIMEOUT = 4408
CLOSE_DUPLICATE_STREAM = 4409
CLOSE_FRAME_TOO_LARGE = 4413
CLOSE_UNSUPPORTED_MEDIA = 4415
# The agents' feed: no session / not staff.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403

MAX_ID_LENGTH = 128
MAX_PARAMETERS = 32
MAX_PARAMETER_LENGTH = 256


class ProtocolError(InvalidInput):
    """Bad input on a media socket: ``code`` for programs, ``message`` for
    people, ``close_code`` for the websocket."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


def _load_json(text: str | bytes | None, *, max_bytes: int) -> dict:
    if text is None:
        raise ProtocolError("binary_frame", "expected a JSON text frame, got a binary frame")
    if isinstance(text, (bytes, bytearray)):
        raise ProtocolError("binary_frame", "expected a JSON text frame, got a binary frame")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(
            "frame_too_large", f"frame is larger than {max_bytes} bytes", close_code=CLOSE_FRAME_TOO_LARGE
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", f"expected a JSON object, got {type(value).__name__}")
    return value


def _object(message: Mapping, key: str, *, required: bool = True) -> Mapping:
    value = message.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", f"{key!r} must be an object")
    return value


# Characters no identifier, number or name from a telephony client contains:
# NUL and the other C0/C1 controls, and lone UTF-16 surrogates ("\ud800" is
# valid JSON, but cannot be stored, logged as UTF-8 or compared safely).
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _string(value: object, what: str, *, max_length: int = MAX_ID_LENGTH, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProtocolError("invalid_message", f"{what} must be a string")
    text = str(value)
    if _FORBIDDEN_CHARACTERS.search(text):
        raise ProtocolError("invalid_message", f"{what} contains a control character or a lone surrogate")
    if required and not text.strip():
        raise ProtocolError("invalid_message", f"{what} must not be empty")
    if len(text) > max_length:
        raise ProtocolError("invalid_message", f"{what} is longer than {max_length} characters")
    return text


def _counter(value: object, what: str) -> int | None:
    """Twilio sends its counters as strings of digits ("3"); accept ints too."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError("invalid_message", f"{what} must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        number = int(value)
    else:
        raise ProtocolError("invalid_message", f"{what} must be a whole number, got {str(value)[:20]!r}")
    if number < 0:
        raise ProtocolError("invalid_message", f"{what} must not be negative")
    return number


# --- Twilio Media Streams ----------------------------------------------------

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
MAX_PHRASES = 100
MAX_PHRASE_LENGTH = 100

# Which party each track or channel carries.
TRACK_SPEAKERS = {"inbound": "customer", "outbound": "agent"}
CHANNEL_SPEAKERS = ("customer", "agent")  # PCM channel 0, channel 1


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


def phrases_clean(values: Sequence[object], *, what: str) -> tuple[str, ...]:
    """A vocabulary list: non-empty strings, whitespace collapsed, duplicates dropped, bounded."""
    out: list[str] = []
    for value in values:
        phrase = " ".join(_string(value, f"a phrase of {what}", max_length=MAX_PHRASE_LENGTH, required=False).split())
        if phrase and phrase not in out:
            out.append(phrase)
    if len(out) > MAX_PHRASES:
        raise ProtocolError("invalid_message", f"{what} has more than {MAX_PHRASES} phrases")
    return tuple(out)


# --- Plain PCM (vosk-server compatible) --------------------------------------

PCM_SAMPLE_RATES = (8000, 16000)
PCM_CHANNELS = (1, 2)


@dataclass(frozen=True)
class PcmConfig:
    sample_rate: int = 8000
    words: bool = True
    caller: str | None = None
    customer_id: str | None = None
    agent: str | None = None
    channels: int = 1
    phrase_list: tuple[str, ...] = ()


@dataclass(frozen=True)
class PcmEof:
    pass


def pcm_parse_text(text: str | None, *, max_bytes: int = 65536) -> PcmConfig | PcmEof:
    """A text frame of the PCM protocol: the config or the end of the stream.
    The config may be wrapped as vosk clients send it, ``{"config": {...}}``,
    or given flat; keys other than the ones below are ignored (vosk's
    ``max_alternatives``). ``channels`` is 1 (the customer) or 2
    (interleaved: channel 0 the customer, channel 1 the agent)."""
    message = _load_json(text, max_bytes=max_bytes)
    if "eof" in message:
        if len(message) != 1 or message["eof"] not in (1, True):
            raise ProtocolError("invalid_message", 'end of stream is {"eof": 1}')
        return PcmEof()
    config = message["config"] if "config" in message else message
    if not isinstance(config, dict):
        raise ProtocolError("invalid_message", "'config' must be an object")
    known = {"sample_rate", "words", "caller", "customer_id", "agent", "channels", "phrase_list"}
    if not known & set(config):
        raise ProtocolError("unknown_message", 'expected a config ({"config": {"sample_rate": 8000}}) or {"eof": 1}')
    rate = config.get("sample_rate", 8000)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ProtocolError("invalid_message", "config.sample_rate must be a number")
    if rate not in PCM_SAMPLE_RATES:
        raise ProtocolError(
            "unsupported_media_format",
            f"sample_rate must be 8000 or 16000, got {rate}",
            close_code=CLOSE_UNSUPPORTED_MEDIA,
        )
    words = config.get("words", True)
    if not isinstance(words, (bool, int)):
        raise ProtocolError("invalid_message", "config.words must be a boolean")
    channels = config.get("channels", 1)
    if isinstance(channels, bool) or channels not in PCM_CHANNELS:
        raise ProtocolError(
            "unsupported_media_format",
            f"channels must be 1 (the customer) or 2 (interleaved: channel 0 the customer, channel 1 the agent), "
            f"got {str(channels)[:20]}",
            close_code=CLOSE_UNSUPPORTED_MEDIA,
        )
    phrase_list = config.get("phrase_list", [])
    if not isinstance(phrase_list, list):
        raise ProtocolError("invalid_message", "config.phrase_list must be a list of strings")
    caller = config.get("caller")
    customer_id = config.get("customer_id")
    return PcmConfig(
        sample_rate=int(rate),
        words=bool(words),
        caller=_string(caller, "config.caller", required=False) or None,
        customer_id=_string(customer_id, "config.customer_id", required=False) or None,
        agent=_string(config.get("agent"), "config.agent", required=False) or None,
        channels=int(channels),
        phrase_list=phrases_clean(phrase_list, what="config.phrase_list"),
    )


def pcm_check_audio(frame: bytes, *, max_bytes: int = 65536, channels: int = 1) -> bytes:
    """A binary frame of the PCM protocol: PCM16 little-endian samples,
    ``channels`` interleaved (every frame holds whole sample groups)."""
    if len(frame) > max_bytes:
        raise ProtocolError(
            "frame_too_large", f"frame is larger than {max_bytes} bytes", close_code=CLOSE_FRAME_TOO_LARGE
        )
    if len(frame) % 2:
        raise ProtocolError("odd_pcm_frame", f"PCM16 frame has an odd number of bytes ({len(frame)})")
    if len(frame) % (2 * channels):
        raise ProtocolError(
            "odd_pcm_frame",
            f"the config announced {channels} interleaved channels: a frame must hold whole sample pairs "
            f"({2 * channels} bytes each), got {len(frame)} bytes",
        )
    return frame


def pcm_partial(*, text: str) -> str:
    return json.dumps({"partial": text})


def pcm_result(
    *, text: str, words: Sequence[Mapping[str, object]] = (), with_words: bool = True, speaker: str | None = None
) -> str:
    """A final result in vosk's shape; word times are seconds from the start
    of the stream. Two-channel streams add ``speaker`` (to the result when
    it is one party's, and to each word)."""
    body: dict[str, object] = {}
    if with_words:
        body["result"] = [
            {"conf": w["conf"], "end": w["end"], "start": w["start"], "word": w["w"],
             **({"speaker": w["speaker"]} if "speaker" in w else {})}
            for w in words
        ]  # fmt: skip
    body["text"] = text
    if speaker is not None:
        body["speaker"] = speaker
    return json.dumps(body)


def pcm_error(*, code: str, message: str) -> str:
    return json.dumps({"error": message, "code": code})
