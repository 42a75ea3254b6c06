"""Plain PCM (vosk-server compatible), as pure functions: a JSON config
first, binary PCM16 frames, ``{"eof": 1}`` at the end; answers in vosk's
shape."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callcenter.streaming.protocols.common import (
    CLOSE_FRAME_TOO_LARGE,
    CLOSE_UNSUPPORTED_MEDIA,
    ProtocolError,
    _load_json,
    _string,
    phrases_clean,
)

PCM_SAMPLE_RATES = (8000, 16000)
PCM_CHANNELS = (1, 2)
CHANNEL_SPEAKERS = ("customer", "agent")  # PCM channel 0, channel 1


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
    # (an int of hundreds of digits is valid JSON: it is no float, and math.isfinite cannot take it)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or (
        isinstance(rate, float) and not math.isfinite(rate)
    ):
        raise ProtocolError("invalid_message", "config.sample_rate must be a number")
    if rate not in PCM_SAMPLE_RATES:
        shown = str(rate) if len(str(rate)) <= 20 else str(rate)[:17] + "..."
        raise ProtocolError(
            "unsupported_media_format",
            f"sample_rate must be 8000 or 16000, got {shown}",
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
