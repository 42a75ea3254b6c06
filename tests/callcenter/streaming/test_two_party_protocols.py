"""Two parties on the wire: Twilio's both_tracks, PCM stereo, vocabulary
lists, and the voiced bounds the endpointer reports for talk-time analytics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from callcenter.streaming import protocols as p
from callcenter.streaming.endpointer import Endpointer, SegmentEnded

SR = 8000


def _start(tracks, **parameters) -> str:
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": "CA1", "tracks": tracks, "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})  # fmt: skip


def _media(track) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"track": track, "payload": "/w=="}})


def test_both_tracks_start_and_media_of_each_track_map_to_the_two_parties():
    start = p.twilio_parse(_start(["inbound", "outbound"], vocabulary="Zentrix, FlexPay Plus, Zentrix"))
    assert start.tracks == ("inbound", "outbound") and start.phrase_list == ("Zentrix", "FlexPay Plus")
    assert [p.TRACK_SPEAKERS[p.twilio_parse(_media(t)).track] for t in ("inbound", "outbound")] == ["customer", "agent"]


@pytest.mark.parametrize("track", ["both", "inbound_track", "", 3])
def test_a_media_track_other_than_inbound_or_outbound_is_a_clear_error(track):
    with pytest.raises(p.ProtocolError, match="media.track must be 'inbound' or 'outbound'") as raised:
        p.twilio_parse(_media(track))
    assert raised.value.close_code == p.CLOSE_PROTOCOL_ERROR


def test_a_stereo_pcm_config_with_a_phrase_list():
    config = p.pcm_parse_text('{"config": {"sample_rate": 8000, "channels": 2, "phrase_list": ["Zentrix", " a  b "]}}')
    assert config.channels == 2 and config.phrase_list == ("Zentrix", "a b")
    assert p.pcm_parse_text('{"config": {"sample_rate": 8000}}').channels == 1


@pytest.mark.parametrize(
    ("config", "code", "says"),
    [
        ({"channels": 3}, "unsupported_media_format", "channels must be 1"),
        ({"channels": 0}, "unsupported_media_format", "channels must be 1"),
        ({"channels": "2"}, "unsupported_media_format", "channels must be 1"),
        ({"channels": True}, "unsupported_media_format", "channels must be 1"),
        ({"phrase_list": "Zentrix"}, "invalid_message", "must be a list"),
        ({"phrase_list": [{"w": 1}]}, "invalid_message", "must be a string"),
        ({"phrase_list": [f"word{i}" for i in range(101)]}, "invalid_message", "more than 100"),
    ],
)
def test_a_bad_channel_count_or_phrase_list_is_refused(config, code, says):
    with pytest.raises(p.ProtocolError, match=says) as raised:
        p.pcm_parse_text(json.dumps({"config": {"sample_rate": 8000, **config}}))
    assert raised.value.code == code


def test_a_stereo_frame_must_hold_whole_sample_pairs():
    assert p.pcm_check_audio(b"\0" * 8, channels=2) == b"\0" * 8
    with pytest.raises(p.ProtocolError, match="announced 2 interleaved channels") as raised:
        p.pcm_check_audio(b"\0" * 6, channels=2)
    assert raised.value.code == "odd_pcm_frame"


def test_the_endpointer_reports_where_the_voiced_part_of_a_segment_starts_and_ends():
    rng = np.random.default_rng(0)
    quiet = lambda ms: (rng.normal(size=SR * ms // 1000) * 1e-3).astype(np.float32)  # noqa: E731
    t = np.arange(SR * 2000 // 1000) / SR
    speech = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    ep = Endpointer()
    events = ep.push(np.concatenate([quiet(1000), speech, quiet(1500)])) + ep.flush()
    (segment,) = [e for e in events if isinstance(e, SegmentEnded)]
    # The audio keeps 200 ms of pre-roll and 300 ms of tail; the voiced part is the speech, to a frame.
    assert (segment.start_ms, segment.end_ms) == (800, 3300)
    assert (segment.speech_start_ms, segment.speech_end_ms) == (1000, 3000)
