"""Fuzzing both media protocols with hypothesis: thousands of malformed
frames through the parsers (and some through the real consumers). A parser
returns an event or raises ``ProtocolError`` with a documented close code,
nothing else; a consumer answers every bad frame with an error and a 44xx
close code, never an internal error."""

from __future__ import annotations

import base64
import json
import string
import uuid

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter.streaming import protocols
from callcenter.streaming.codecs import mulaw_to_float, pcm16_to_float
from callcenter.streaming.protocols import ProtocolError

PARSER_EXAMPLES = 3000
STRUCTURED_EXAMPLES = 2000  # slower to draw
CLOSE_CODES = {
    protocols.CLOSE_PROTOCOL_ERROR, protocols.CLOSE_FRAME_TOO_LARGE, protocols.CLOSE_UNSUPPORTED_MEDIA,
}  # fmt: skip
TWILIO_EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop"]
MAX_BYTES = 4096

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=6,
)  # fmt: skip
# Realistic keys with wrong, missing or hostile values.
payloads = st.one_of(
    st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet=string.ascii_letters + "+/=-_ !", max_size=60),
    json_values,
)
media = st.fixed_dictionaries(
    {}, optional={"track": st.sampled_from(["inbound", "outbound", "both", ""]) | json_values, "chunk": json_values,
                  "timestamp": json_values, "payload": payloads},
)  # fmt: skip
start = st.fixed_dictionaries(
    {},
    optional={
        "streamSid": st.text(max_size=150) | json_values, "callSid": json_values, "accountSid": json_values,
        "tracks": st.lists(st.sampled_from(["inbound", "outbound", "x"]), max_size=3) | json_values,
        "customParameters": st.dictionaries(st.text(max_size=40), st.text(max_size=300) | json_values, max_size=40)
        | json_values,
        "mediaFormat": st.fixed_dictionaries({}, optional={
            "encoding": st.sampled_from(["audio/x-mulaw", "audio/l16", ""]) | json_values,
            "sampleRate": st.sampled_from([8000, 16000, 0, -1]) | json_values,
            "channels": st.sampled_from([1, 2]) | json_values}) | json_values,
    },
)  # fmt: skip
twilio_messages = st.fixed_dictionaries(
    {"event": st.sampled_from(TWILIO_EVENTS) | json_values},
    optional={
        "sequenceNumber": json_values, "streamSid": st.text(max_size=140) | json_values, "media": media | json_values,
        "start": start | json_values, "mark": st.fixed_dictionaries({}, optional={"name": json_values}) | json_values,
        "dtmf": st.fixed_dictionaries({}, optional={"digit": json_values, "track": json_values}) | json_values,
        "stop": json_values, "protocol": json_values, "version": json_values,
    },
)  # fmt: skip
pcm_messages = st.one_of(
    st.fixed_dictionaries({"config": st.fixed_dictionaries({}, optional={
        "sample_rate": st.sampled_from([8000, 16000, 44100, 0]) | json_values, "words": json_values,
        "caller": json_values, "customer_id": json_values, "agent": json_values,
        "phrase_list": json_values, "max_alternatives": json_values}) | json_values}),
    st.fixed_dictionaries({"eof": json_values}),
    st.dictionaries(st.text(max_size=12), json_values, max_size=5),
)  # fmt: skip


def _mangle(text: str, data) -> str:
    """Cut, duplicate or corrupt a serialized frame."""
    how = data.draw(st.sampled_from(["keep", "truncate", "flip", "pad", "nest"]))
    if how == "truncate" and text:
        return text[: data.draw(st.integers(0, len(text) - 1))]
    if how == "flip" and text:
        i = data.draw(st.integers(0, len(text) - 1))
        return text[:i] + data.draw(st.characters()) + text[i + 1 :]
    if how == "pad":
        return text + " " * data.draw(st.integers(0, MAX_BYTES))
    if how == "nest":
        return "[" * data.draw(st.integers(0, 3000)) + text
    return text


def _check_twilio(frame) -> None:
    try:
        event = protocols.twilio_parse(frame, max_bytes=MAX_BYTES)
    except ProtocolError as exc:
        assert exc.close_code in CLOSE_CODES and exc.code and exc.message
        return
    assert type(event).__name__.startswith("Twilio")
    if isinstance(event, protocols.TwilioMedia):
        assert isinstance(event.payload, bytes) and len(event.payload) <= MAX_BYTES
        assert mulaw_to_float(event.payload).dtype == np.float32


@settings(max_examples=STRUCTURED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=twilio_messages, data=st.data())
def test_twilio_parser_answers_any_structured_frame_with_an_event_or_a_protocol_error(message, data):
    _check_twilio(_mangle(json.dumps(message, allow_nan=True), data))


@settings(max_examples=PARSER_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=st.text(max_size=MAX_BYTES + 10) | st.binary(max_size=MAX_BYTES + 10) | st.none())
def test_twilio_parser_answers_any_text_or_bytes_with_an_event_or_a_protocol_error(frame):
    _check_twilio(frame)


def _check_pcm_text(frame) -> None:
    try:
        message = protocols.pcm_parse_text(frame, max_bytes=MAX_BYTES)
    except ProtocolError as exc:
        assert exc.close_code in CLOSE_CODES and exc.code and exc.message
        return
    if isinstance(message, protocols.PcmConfig):
        assert message.sample_rate in (8000, 16000) and isinstance(message.words, bool)
    else:
        assert isinstance(message, protocols.PcmEof)


@settings(max_examples=STRUCTURED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=pcm_messages, data=st.data())
def test_pcm_parser_answers_any_structured_message_with_a_config_eof_or_a_protocol_error(message, data):
    _check_pcm_text(_mangle(json.dumps(message, allow_nan=True), data))


@settings(max_examples=PARSER_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=st.text(max_size=MAX_BYTES + 10) | st.none())
def test_pcm_parser_answers_any_text_with_a_config_eof_or_a_protocol_error(frame):
    _check_pcm_text(frame)


@settings(max_examples=PARSER_EXAMPLES, deadline=None)
@given(frame=st.binary(max_size=MAX_BYTES + 10))
def test_pcm_audio_frames_of_any_bytes_decode_or_raise_a_protocol_error(frame):
    try:
        audio = protocols.pcm_check_audio(frame, max_bytes=MAX_BYTES)
    except ProtocolError as exc:
        assert exc.close_code in CLOSE_CODES and (len(frame) % 2 or len(frame) > MAX_BYTES or not frame)
        return
    samples = pcm16_to_float(audio)
    assert len(samples) == len(frame) // 2 and np.all(np.abs(samples) <= 1.0)


# --- through the real consumers ---------------------------------------------------


@pytest.fixture
def token(django_db_blocker, settings, shared_var_dir):
    from callcenter.calls import services

    settings.STREAM_PARTIAL_INTERVAL_MS = 0
    settings.STREAM_MAX_FRAME_BYTES = MAX_BYTES
    with django_db_blocker.unblock():
        return services.line_create(name=f"fuzz-{np.random.default_rng().integers(1 << 30)}")[1]


async def _answer(path: str, frames: list[str | bytes]) -> tuple[list, int]:
    communicator = WebsocketCommunicator(application(), path)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    for frame in frames:  # raw ASGI messages: empty frames too
        key = "bytes" if isinstance(frame, bytes) else "text"
        await communicator.send_input({"type": "websocket.receive", key: frame})
    sent = []
    while True:
        output = await communicator.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            await communicator.disconnect()
            return sent, output.get("code", 1000)
        sent.append(output)


def application():
    from callcenter.asgi import application as app

    return app


def _start(sid: str) -> str:
    return json.dumps({
        "event": "start", "streamSid": sid, "start": {"streamSid": sid, "callSid": "CA1", "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    })  # fmt: skip


@pytest.mark.django_db(transaction=True)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=twilio_messages, data=st.data())
def test_the_twilio_consumer_never_fails_internally_on_a_malformed_frame(token, message, data):
    # A new stream id per example (deleting the last example's call raced its analytics task in the worker).
    sid = f"MZfuzz{uuid.uuid4().hex[:12]}"
    message = dict(message, streamSid=message.get("streamSid", sid))
    frame = _mangle(json.dumps(message, allow_nan=True), data)
    try:
        protocols.twilio_parse(frame, max_bytes=MAX_BYTES)
    except ProtocolError:
        pass
    else:
        return  # a valid frame: not this test's business
    sent, code = async_to_sync(_answer)(f"/ws/media/twilio/{token}", [_start(sid), frame])

    assert code in CLOSE_CODES, (code, frame[:200])
    assert json.loads(sent[-1]["text"])["event"] == "error"


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=pcm_messages, data=st.data(), audio=st.binary(min_size=1, max_size=64).filter(lambda b: len(b) % 2))
def test_the_pcm_consumer_never_fails_internally_on_a_malformed_frame(token, message, data, audio):
    frame = _mangle(json.dumps(message, allow_nan=True), data)
    try:
        parsed = protocols.pcm_parse_text(frame, max_bytes=MAX_BYTES)
    except ProtocolError:
        frames = [frame]
    else:
        if not isinstance(parsed, protocols.PcmConfig):
            return
        frames = [frame, audio]  # a valid config, then an odd-length audio frame
    sent, code = async_to_sync(_answer)(f"/ws/media/pcm/{token}", frames)

    assert code in CLOSE_CODES, (code, frames)
    assert "error" in json.loads(sent[-1]["text"])
