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

``common`` holds the close codes, ``ProtocolError`` and the field checks
both protocols share; ``twilio`` and ``pcm`` one protocol each. Everything
public is importable from ``callcenter.streaming.protocols``.
"""

from callcenter.streaming.protocols.common import (
    CLOSE_BAD_TOKEN,
    CLOSE_DUPLICATE_STREAM,
    CLOSE_FORBIDDEN,
    CLOSE_FRAME_TOO_LARGE,
    CLOSE_INTERNAL_ERROR,
    CLOSE_LINE_DISABLED,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_START_TIMEOUT,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_MEDIA,
    MAX_ID_LENGTH,
    MAX_PARAMETER_LENGTH,
    MAX_PARAMETERS,
    MAX_PHRASE_LENGTH,
    MAX_PHRASES,
    ProtocolError,
    phrases_clean,
)
from callcenter.streaming.protocols.pcm import (
    CHANNEL_SPEAKERS,
    PCM_CHANNELS,
    PCM_SAMPLE_RATES,
    PcmConfig,
    PcmEof,
    pcm_check_audio,
    pcm_error,
    pcm_parse_text,
    pcm_partial,
    pcm_result,
)
from callcenter.streaming.protocols.twilio import (
    AGENT_PARAMETERS,
    CALLER_PARAMETERS,
    CUSTOMER_ID_PARAMETERS,
    MARKS_PARAMETERS,
    TRACK_SPEAKERS,
    TWILIO_ENCODING,
    TWILIO_SAMPLE_RATE,
    TWILIO_TRACKS,
    VOCABULARY_PARAMETERS,
    TwilioConnected,
    TwilioDtmf,
    TwilioEvent,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    twilio_clear,
    twilio_error,
    twilio_mark,
    twilio_parse,
)

__all__ = [
    "CLOSE_BAD_TOKEN",
    "CLOSE_DUPLICATE_STREAM",
    "CLOSE_FORBIDDEN",
    "CLOSE_FRAME_TOO_LARGE",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_LINE_DISABLED",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_START_TIMEOUT",
    "CLOSE_UNAUTHENTICATED",
    "CLOSE_UNSUPPORTED_MEDIA",
    "MAX_ID_LENGTH",
    "MAX_PARAMETER_LENGTH",
    "MAX_PARAMETERS",
    "MAX_PHRASE_LENGTH",
    "MAX_PHRASES",
    "ProtocolError",
    "phrases_clean",
    "CHANNEL_SPEAKERS",
    "PCM_CHANNELS",
    "PCM_SAMPLE_RATES",
    "PcmConfig",
    "PcmEof",
    "pcm_check_audio",
    "pcm_error",
    "pcm_parse_text",
    "pcm_partial",
    "pcm_result",
    "AGENT_PARAMETERS",
    "CALLER_PARAMETERS",
    "CUSTOMER_ID_PARAMETERS",
    "MARKS_PARAMETERS",
    "TRACK_SPEAKERS",
    "TWILIO_ENCODING",
    "TWILIO_SAMPLE_RATE",
    "TWILIO_TRACKS",
    "VOCABULARY_PARAMETERS",
    "TwilioConnected",
    "TwilioDtmf",
    "TwilioEvent",
    "TwilioMark",
    "TwilioMedia",
    "TwilioStart",
    "TwilioStop",
    "twilio_clear",
    "twilio_error",
    "twilio_mark",
    "twilio_parse",
]
