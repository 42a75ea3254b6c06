"""Parsing and encoding of the media protocols, without a socket."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.streaming import protocols as p
from callcenter.streaming.protocols import ProtocolError

# Messages as Twilio sends them (docs: Media Streams - WebSocket Messages).
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC" + "0" * 32,
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "callSid": "CA" + "1" * 32,
        "tracks": ["inbound"],
        "customParameters": {"From": "+15551230000", "customerId": "cust-42"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
}


def media(audio: bytes = b"\xff" * 160, **overrides) -> str:
    message = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": base64.b64encode(audio).decode()},
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    }
    message["media"].update(overrides)
    return json.dumps(message)


def test_twilio_start_gives_the_stream_the_caller_and_the_customer():
    event = p.twilio_parse(json.dumps(START))

    assert isinstance(event, p.TwilioStart)
    assert event.stream_sid == "MZ18ad3ab5a668481ce02b83e7395059f0" and event.call_sid.startswith("CA")
    assert event.caller == "+15551230000" and event.customer_id == "cust-42"
    assert event.tracks == ("inbound",) and event.sequence == 1 and not event.wants_marks


def test_twilio_media_decodes_the_payload_and_the_counters_sent_as_strings():
    event = p.twilio_parse(media(b"\x01\x02\x03"))

    assert event == p.TwilioMedia(track="inbound", chunk=1, timestamp_ms=5, payload=b"\x01\x02\x03", sequence=3)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"event": "connected", "protocol": "Call", "version": "1.0.0"}, p.TwilioConnected("Call", "1.0.0")),
        ({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}},
         p.TwilioDtmf(track="inbound_track", digit="1")),
        ({"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "segment-0"}},
         p.TwilioMark(name="segment-0")),
        ({"event": "stop", "sequenceNumber": "5", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}},
         p.TwilioStop(call_sid="CA1")),
    ],
)  # fmt: skip
def test_twilio_other_events_parse(message, expected):
    assert p.twilio_parse(json.dumps(message)) == expected


def test_twilio_answers_mark_and_clear_in_twilio_shape():
    assert json.loads(p.twilio_mark(stream_sid="MZ1", name="segment-3")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "segment-3"},
    }
    assert json.loads(p.twilio_clear(stream_sid="MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def _with_format(**fmt) -> str:
    message = json.loads(json.dumps(START))
    message["start"]["mediaFormat"].update(fmt)
    return json.dumps(message)


@pytest.mark.parametrize(
    ("frame", "code", "close_code"),
    [
        ("{not json", "invalid_json", 4400),
        ("[1, 2]", "invalid_message", 4400),
        ('{"event": "hangup"}', "unknown_event", 4400),
        ('{"no": "event"}', "missing_event", 4400),
        (media(payload="***not base64***"), "bad_base64", 4400),
        (media(payload="AAA"), "bad_base64", 4400),
        (media(payload=5), "bad_payload", 4400),
        (media(chunk="-1"), "invalid_message", 4400),
        (media(track="sideways"), "invalid_message", 4400),
        (_with_format(encoding="audio/x-l16"), "unsupported_media_format", 4415),
        (_with_format(sampleRate=16000), "unsupported_media_format", 4415),
        (_with_format(channels=2), "unsupported_media_format", 4415),
        (b"\x00\x01", "binary_frame", 4400),
        ('{"event": "media", "media": "x"}', "invalid_message", 4400),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "invalid_message", 4400),
        ('{"event": "start", "start": {"mediaFormat": {}}}', "invalid_message", 4400),
        ("x" * 70000, "frame_too_large", 4413),
    ],
)
def test_twilio_bad_frames_raise_a_protocol_error_with_code_and_close_code(frame, code, close_code):
    with pytest.raises(ProtocolError) as raised:
        p.twilio_parse(frame, max_bytes=65536)

    assert (raised.value.code, raised.value.close_code) == (code, close_code)
    assert raised.value.message


def test_pcm_config_in_vosk_shape_and_flat():
    assert p.pcm_parse_text('{"config": {"sample_rate": 16000, "words": 0}}') == p.PcmConfig(16000, False)
    assert p.pcm_parse_text('{"sample_rate": 8000.0, "caller": "+15551230000", "phrase_list": ["a"]}') == p.PcmConfig(
        8000, True, caller="+15551230000", phrase_list=("a",)
    )
    assert p.pcm_parse_text('{"eof" : 1}') == p.PcmEof()


@pytest.mark.parametrize(
    ("frame", "code", "close_code"),
    [
        ('{"config": {"sample_rate": 44100}}', "unsupported_media_format", 4415),
        ('{"config": {"sample_rate": 1' + "0" * 400 + '}}', "unsupported_media_format", 4415),
        ('{"config": {"sample_rate": 1e400}}', "invalid_message", 4400),
        ('{"config": {"sample_rate": "fast"}}', "invalid_message", 4400),
        ('{"config": {"sample_rate": 8000, "words": "yes"}}', "invalid_message", 4400),
        ('{"config": 5}', "invalid_message", 4400),
        ('{"hello": 1}', "unknown_message", 4400),
        ('{"eof": 0}', "invalid_message", 4400),
        ("nope", "invalid_json", 4400),
    ],
)
def test_pcm_bad_text_frames_raise_a_protocol_error(frame, code, close_code):
    with pytest.raises(ProtocolError) as raised:
        p.pcm_parse_text(frame)

    assert (raised.value.code, raised.value.close_code) == (code, close_code)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"config": {"sample_rate": ' + "9" * 5000 + "}}", "a number has too many digits"),
        ('{"config": ', "Expecting value"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_a_frame_that_is_not_json_says_why(frame, reason):
    with pytest.raises(ProtocolError) as raised:
        p.pcm_parse_text(frame, max_bytes=400000)

    assert raised.value.code == "invalid_json" and raised.value.close_code == 4400
    assert raised.value.message.startswith("frame is not valid JSON: ") and reason in raised.value.message


def test_pcm_audio_frames_must_be_whole_samples_and_not_too_large():
    assert p.pcm_check_audio(b"\x00\x01" * 10) == b"\x00\x01" * 10
    with pytest.raises(ProtocolError, match="odd number of bytes"):
        p.pcm_check_audio(b"\x00" * 3)
    with pytest.raises(ProtocolError) as raised:
        p.pcm_check_audio(b"\x00" * 70000, max_bytes=65536)
    assert raised.value.close_code == 4413


def test_pcm_results_have_vosk_keys():
    words = [{"w": "refund", "start": 1.2, "end": 1.6, "conf": 0.9}]

    assert json.loads(p.pcm_result(text="refund", words=words)) == {
        "result": [{"conf": 0.9, "end": 1.6, "start": 1.2, "word": "refund"}],
        "text": "refund",
    }
    assert json.loads(p.pcm_result(text="refund", words=words, with_words=False)) == {"text": "refund"}
    assert json.loads(p.pcm_partial(text="ref")) == {"partial": "ref"}


# --- properties: no input makes the parsers fail other than with ProtocolError ---

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", ""])


@settings(max_examples=300)
@given(text=st.text(max_size=300))
def test_any_text_either_parses_or_is_a_protocol_error(text):
    for parse in (p.twilio_parse, p.pcm_parse_text):
        try:
            parse(text)
        except ProtocolError as exc:
            assert exc.close_code in (4400, 4413, 4415) and exc.code


@settings(max_examples=300)
@given(event=_events, body=st.dictionaries(st.text(max_size=12), _json, max_size=5), inner=_json)
def test_any_json_message_either_parses_or_is_a_protocol_error(event, body, inner):
    message = {"event": event, **body, event: inner}
    try:
        p.twilio_parse(json.dumps(message))
    except ProtocolError as exc:
        assert exc.code
    try:
        p.pcm_parse_text(json.dumps({"config": inner} if event == "start" else body))
    except ProtocolError as exc:
        assert exc.code


@given(payload=st.binary(max_size=2000), sequence=st.integers(min_value=0, max_value=10**9))
def test_media_payloads_round_trip_through_base64(payload, sequence):
    frame = json.dumps({"event": "media", "sequenceNumber": str(sequence),
                        "media": {"payload": base64.b64encode(payload).decode()}})  # fmt: skip

    event = p.twilio_parse(frame)

    assert event.payload == payload and event.sequence == sequence and event.track == "inbound"


@given(frame=st.binary(max_size=5000))
def test_pcm_frames_are_accepted_exactly_when_they_hold_whole_samples(frame):
    if len(frame) % 2 == 0:
        assert p.pcm_check_audio(frame) == frame
    else:
        with pytest.raises(ProtocolError):
            p.pcm_check_audio(frame)
