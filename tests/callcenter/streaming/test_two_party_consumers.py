"""Two parties through the media sockets (Channels' communicator, the real
ASGI application, database and Redis channel layer; no worker): each party's
segments stored with its speaker, and bad input on two-party streams."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from asr_core.audio import mulaw_encode
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from tests.callcenter.streaming.test_consumers import exchange, quiet, speech

pytestmark = pytest.mark.django_db(transaction=True)

SR = 8000
SID = "MZ00000000000000000000000000000020"


@pytest.fixture(autouse=True)
def stream_settings(settings, shared_var_dir):
    settings.STREAM_PARTIAL_INTERVAL_MS = 0  # no model in these tests
    settings.STREAM_START_TIMEOUT_S = 1
    settings.STREAM_EOF_WAIT_S = 1
    settings.STREAM_MAX_FRAME_BYTES = 8192


@pytest.fixture
def token() -> str:
    return services.line_create(name="two-party")[1]


def start(tracks=("inbound", "outbound")) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "tracks": list(tracks),
        "customParameters": {"caller": "+15550102020"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})  # fmt: skip


def both_tracks(customer: np.ndarray, agent: np.ndarray) -> list[str]:
    """20 ms of each track in turn, as Twilio sends both_tracks."""
    payloads = {t: mulaw_encode(torch.from_numpy(a)) for t, a in (("inbound", customer), ("outbound", agent))}
    frames = []
    for i, o in enumerate(range(0, len(payloads["inbound"]), 160)):
        for track, payload in payloads.items():
            frames.append(json.dumps({"event": "media", "streamSid": SID, "media": {
                "track": track, "chunk": str(i + 1), "timestamp": str(20 * i),
                "payload": base64.b64encode(payload[o : o + 160]).decode()}}))  # fmt: skip
    return frames


STOP = json.dumps({"event": "stop", "streamSid": SID, "stop": {"callSid": "CA1"}})


def media(track: str) -> str:
    return json.dumps({"event": "media", "streamSid": SID, "media": {"track": track, "payload": "/w=="}})


# Customer speaks 0.5-1.5 s; the agent 1.2-2.7 s (it starts while the customer still speaks).
CUSTOMER = np.concatenate([quiet(500), speech(1000), quiet(2000)])
AGENT = np.concatenate([quiet(1200), speech(1500), quiet(800)])


def test_a_both_tracks_call_stores_each_party_s_segments_with_its_speaker_in_onset_order(token):
    result = exchange(f"/ws/media/twilio/{token}", [start(), *both_tracks(CUSTOMER, AGENT), STOP])

    assert result == {"sent": [], "close": 1000}
    call = Call.objects.get()
    assert call.status == "ended"
    segments = list(Segment.objects.filter(call=call).order_by("index"))
    assert [(s.index, s.speaker) for s in segments] == [(0, "customer"), (1, "agent")]
    assert [(s.speech_start_ms, s.speech_end_ms) for s in segments] == [(500, 1500), (1200, 2700)]
    assert all(s.audio and s.start_ms <= s.speech_start_ms for s in segments)


@pytest.mark.parametrize("track", ["both", "inbound_track", "OUTBOUND"])
def test_a_track_other_than_inbound_or_outbound_fails_the_call_and_keeps_what_was_stored(token, track):
    frames = [start(), *both_tracks(CUSTOMER, AGENT), media(track)]
    result = exchange(f"/ws/media/twilio/{token}", frames)

    assert result["close"] == 4400 and result["sent"][-1]["code"] == "invalid_message"
    assert "media.track must be 'inbound' or 'outbound'" in result["sent"][-1]["message"]
    call = Call.objects.get()
    assert call.status == "failed" and "media.track" in call.failure_reason
    # The customer's segment ended before the bad frame; the agent's in progress is flushed: both kept.
    assert sorted(Segment.objects.filter(call=call).values_list("speaker", flat=True)) == ["agent", "customer"]
    assert all(s.audio for s in Segment.objects.filter(call=call))


def test_media_of_a_track_the_start_did_not_list_is_an_error(token):
    frames = [start(tracks=("inbound",)), *both_tracks(CUSTOMER, AGENT)[::2], media("outbound")]
    result = exchange(f"/ws/media/twilio/{token}", frames)

    assert result["close"] == 4400 and result["sent"][-1]["code"] == "track_not_announced"
    assert "did not list" in result["sent"][-1]["message"]
    call = Call.objects.get()
    assert call.status == "failed"
    assert list(Segment.objects.filter(call=call).values_list("speaker", flat=True)) == ["customer"]


def stereo(customer: np.ndarray, agent: np.ndarray, chunk_ms: int = 200) -> list[bytes]:
    pcm = (np.stack([customer, agent], axis=1) * 32767).round().astype("<i2").tobytes()
    step = SR * chunk_ms // 1000 * 4
    return [pcm[o : o + step] for o in range(0, len(pcm), step)]


def test_a_two_channel_pcm_stream_gives_channel_0_to_the_customer_and_channel_1_to_the_agent(token):
    result = exchange(f"/ws/media/pcm/{token}",
                      ['{"config": {"sample_rate": 8000, "channels": 2}}', *stereo(CUSTOMER, AGENT), '{"eof": 1}'])  # fmt: skip

    assert result["close"] == 1000
    segments = list(Segment.objects.filter(call=Call.objects.get()).order_by("index"))
    assert [(s.speaker, s.speech_start_ms, s.speech_end_ms) for s in segments] == [
        ("customer", 500, 1500), ("agent", 1200, 2700)]


def test_a_channel_count_the_config_did_not_announce_is_refused(token):
    result = exchange(f"/ws/media/pcm/{token}", ['{"config": {"sample_rate": 8000, "channels": 3}}'])
    assert result["close"] == 4415 and "channels must be 1" in result["sent"][-1]["error"]
    assert not Call.objects.exists()

    # Announced 2 channels, then a frame that is not whole sample pairs: the call fails, its segments stay.
    frames = ['{"config": {"sample_rate": 8000, "channels": 2}}', *stereo(CUSTOMER, AGENT)[:12], b"\0" * 6]
    result = exchange(f"/ws/media/pcm/{token}", frames)
    assert result["close"] == 4400 and result["sent"][-1]["code"] == "odd_pcm_frame"
    call = Call.objects.get()
    assert call.status == "failed"
    assert list(Segment.objects.filter(call=call).values_list("speaker", flat=True)) == ["customer", "agent"]
