"""The media sockets and the agents' feed, through Channels' communicator
(the real ASGI application, database and Redis channel layer; no worker)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import torch
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from asr_core.audio import mulaw_encode, pcm16_encode
from callcenter.asgi import application
from callcenter.calls import services
from callcenter.calls.models import Call, Line, Segment
from callcenter.streaming import speculation
from tests.fixtures.calls import twilio_start_frame

pytestmark = pytest.mark.django_db(transaction=True)

SR = 8000
STREAM_SID = "MZ00000000000000000000000000000001"


@pytest.fixture(autouse=True)
def stream_settings(settings, shared_var_dir):
    settings.STREAM_PARTIAL_INTERVAL_MS = 0  # no model in these tests
    settings.STREAM_START_TIMEOUT_S = 1
    settings.STREAM_EOF_WAIT_S = 1
    settings.STREAM_MAX_FRAME_BYTES = 4096


@pytest.fixture
def token() -> str:
    return services.line_create(name="trunk-1")[1]


def speech(ms: int) -> np.ndarray:
    """Speech-like audio: a tone with syllables."""
    t = np.arange(SR * ms // 1000) / SR
    return (0.3 * (0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def quiet(ms: int) -> np.ndarray:
    return (np.random.default_rng(0).normal(size=SR * ms // 1000) * 3e-4).astype(np.float32)


def start_frame(stream_sid: str = STREAM_SID, **parameters: str) -> str:
    return twilio_start_frame(stream_sid, **parameters)


def media_frames(audio: np.ndarray) -> list[str]:
    payload = mulaw_encode(torch.from_numpy(audio))
    return [
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(i + 2),
                "streamSid": STREAM_SID,
                "media": {
                    "track": "inbound",
                    "chunk": str(i + 1),
                    "timestamp": str(20 * i),
                    "payload": base64.b64encode(payload[o : o + 160]).decode(),
                },
            }
        )  # fmt: skip
        for i, o in enumerate(range(0, len(payload), 160))
    ]


STOP = json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": STREAM_SID, "stop": {"callSid": "CA1"}})


async def _exchange(path: str, frames: list[str | bytes], *, disconnect_early: bool = False, headers=None) -> dict:
    """Connect, send the frames, collect what the server sends until it closes."""
    communicator = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    for frame in frames:
        if isinstance(frame, bytes):
            await communicator.send_to(bytes_data=frame)
        else:
            await communicator.send_to(text_data=frame)
    if disconnect_early:
        await communicator.disconnect(code=1006)
        return {"sent": [], "close": None}
    sent, close = [], None
    while close is None:
        output = await communicator.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            close = output.get("code", 1000)
        else:
            sent.append(json.loads(output.get("text") or output.get("bytes")))
    await communicator.disconnect()
    return {"sent": sent, "close": close}


def exchange(path: str, frames: list[str | bytes], **kwargs) -> dict:
    return async_to_sync(_exchange)(path, frames, **kwargs)


# --- Twilio ---


def test_a_twilio_call_is_stored_as_segments_with_audio_and_closed_at_stop(token):
    audio = np.concatenate([quiet(500), speech(1000), quiet(1000), speech(1500), quiet(800)])

    result = exchange(f"/ws/media/twilio/{token}", [start_frame(caller="+1 555 123 0000"), *media_frames(audio), STOP])

    assert result == {"sent": [], "close": 1000}
    call = Call.objects.get()
    assert (call.protocol, call.external_id, call.status, call.line.name) == ("twilio", STREAM_SID, "ended", "trunk-1")
    assert call.customer.phone == "+15551230000" and call.duration_s is not None
    segments = list(Segment.objects.filter(call=call))
    assert [(s.index, s.start_ms, s.end_ms) for s in segments] == [(0, 300, 1800), (1, 2300, 4300)]
    # Queued for recognition (a worker started by other tests may have done it already).
    assert all(s.status in ("pending", "recognized") for s in segments)
    for segment in segments:
        stored = segment.audio.read()
        assert stored[:4] == b"RIFF" and len(stored) == 44 + 2 * SR * (segment.end_ms - segment.start_ms) // 1000


def test_bidirectional_twilio_streams_get_clear_at_speech_and_a_mark_at_each_endpoint(token):
    audio = np.concatenate([quiet(300), speech(800), quiet(900)])

    result = exchange(f"/ws/media/twilio/{token}", [start_frame(marks="true"), *media_frames(audio), STOP])

    assert result["sent"] == [
        {"event": "clear", "streamSid": STREAM_SID},
        {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "segment-0"}},
    ]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_pause_offers_the_audio_the_segment_keeps_and_speech_that_comes_back_withdraws_it(
    token, settings, monkeypatch, enabled
):
    settings.STREAM_SPECULATIVE_FINALS = enabled
    said: list[tuple[str, int, str | None]] = []
    offer, withdraw = speculation.offer, speculation.withdraw

    def offered(*, segment_id: int, wav: bytes) -> bool:
        said.append(("offer", segment_id, speculation.digest(wav)))
        return offer(segment_id=segment_id, wav=wav)

    def withdrawn(*, segment_id: int) -> None:
        said.append(("withdraw", segment_id, None))
        withdraw(segment_id=segment_id)

    monkeypatch.setattr(speculation, "offer", offered)
    monkeypatch.setattr(speculation, "withdraw", withdrawn)
    # A 400 ms pause inside the segment (past its 300 ms tail, short of the 600 ms endpoint).
    audio = np.concatenate([quiet(300), speech(800), quiet(400), speech(800), quiet(900)])

    exchange(f"/ws/media/twilio/{token}", [start_frame(), *media_frames(audio), STOP])

    (segment,) = Segment.objects.all()
    if not enabled:
        assert said == []
        return
    assert [(kind, pk) for kind, pk, _ in said] == [("offer", segment.pk), ("withdraw", segment.pk), ("offer", segment.pk)]
    assert said[0][2] != said[2][2] == speculation.digest(segment.audio.read()), "the last offer is the stored audio"


def test_an_abrupt_disconnect_keeps_the_speech_received_so_far(token):
    audio = np.concatenate([quiet(300), speech(1000), quiet(800), speech(700)])  # no stop, cut mid-word

    exchange(f"/ws/media/twilio/{token}", [start_frame(), *media_frames(audio)], disconnect_early=True)

    call = Call.objects.get()
    assert call.status == "ended" and "without stop" in call.failure_reason
    segments = list(Segment.objects.filter(call=call))
    assert [(s.start_ms, s.end_ms) for s in segments] == [(100, 1600), (1900, 2800)]
    assert all(s.audio for s in segments)


@pytest.mark.parametrize(
    ("frames", "code", "close_code", "call_status"),
    [
        (["{oops"], "invalid_json", 4400, None),
        (['{"event": "hangup"}'], "unknown_event", 4400, None),
        ([b"\x00\x01\x02"], "binary_frame", 4400, None),
        ([start_frame().replace("audio/x-mulaw", "audio/x-l16")], "unsupported_media_format", 4415, None),
        (["x" * 5000], "frame_too_large", 4413, None),
        ([b"\x00" * 5000], "frame_too_large", 4413, None),
        (media_frames(speech(100)), "start_expected", 4400, None),
        ([STOP], "start_expected", 4400, None),
        ([start_frame(), start_frame()], "duplicate_start", 4400, "failed"),
        ([start_frame(), media_frames(speech(40))[0].replace('"payload": "', '"payload": "!!')], "bad_base64", 4400,
         "failed"),
        ([start_frame(), *media_frames(speech(200)), STOP, media_frames(speech(20))[0]], "frame_after_stop", 4400,
         "ended"),
    ],
    ids=["invalid-json", "unknown-event", "binary", "media-format", "text-too-large", "binary-too-large",
         "media-before-start", "stop-before-start", "second-start", "bad-base64", "frame-after-stop"],
)  # fmt: skip
def test_twilio_bad_input_is_answered_with_an_error_and_a_close_code(token, frames, code, close_code, call_status):
    result = exchange(f"/ws/media/twilio/{token}", frames)

    assert result["sent"][-1]["event"] == "error" and result["sent"][-1]["code"] == code
    assert result["sent"][-1]["message"]
    assert result["close"] == close_code
    assert list(Call.objects.values_list("status", flat=True)) == ([call_status] if call_status else [])
    if call_status == "failed":
        assert code in Call.objects.get().failure_reason


def test_a_socket_that_never_sends_start_is_closed_with_4408_and_leaves_nothing(token):
    result = exchange(f"/ws/media/twilio/{token}", [json.dumps({"event": "connected", "protocol": "Call"})])

    assert result["sent"] == [{"event": "error", "code": "start_timeout", "message": "no start within 1 s"}]
    assert result["close"] == 4408 and not Call.objects.exists()


def test_a_stream_sid_seen_before_is_refused_with_4409(token):
    services.call_start(protocol="twilio", external_id=STREAM_SID)

    result = exchange(f"/ws/media/twilio/{token}", [start_frame()])

    assert (result["sent"][0]["code"], result["close"]) == ("duplicate_stream", 4409)
    assert Call.objects.count() == 1


def test_a_stream_refused_as_a_duplicate_changes_no_customer(token):
    """The caller's lookup (which may create a customer or give one its external id) and the call
    are one transaction: a refused start leaves the customers as they were."""
    from callcenter.calls.models import Customer

    known = services.customer_get_or_create(phone="+15551230001")[0]
    services.call_start(protocol="twilio", external_id=STREAM_SID, customer_id=known.pk)

    result = exchange(f"/ws/media/twilio/{token}", [start_frame(caller="+15551230001", customer_id="HIJACK-1")])
    assert (result["sent"][0]["code"], result["close"]) == ("duplicate_stream", 4409)
    result = exchange(f"/ws/media/twilio/{token}", [start_frame(caller="+15551230055")])
    assert (result["sent"][0]["code"], result["close"]) == ("duplicate_stream", 4409)

    known.refresh_from_db()
    assert known.external_id is None and list(Customer.objects.values_list("phone", flat=True)) == ["+15551230001"]
    assert Call.objects.count() == 1


@pytest.mark.parametrize("protocol", ["twilio", "pcm"])
@pytest.mark.parametrize(
    ("path_token", "code", "close_code"),
    [("", "invalid_token", 4401), ("wrong-token", "invalid_token", 4401), ("DISABLED", "line_disabled", 4403)],
)
def test_a_missing_wrong_or_disabled_line_token_closes_before_anything_is_stored(
    protocol, path_token, code, close_code
):
    if path_token == "DISABLED":
        line, path_token = services.line_create(name="off", enabled=False)
    first = start_frame() if protocol == "twilio" else '{"config": {"sample_rate": 8000}}'

    result = exchange(f"/ws/media/{protocol}/{path_token}", [first])

    assert result["sent"][0]["code"] == code and result["close"] == close_code
    assert not Call.objects.exists() and not Segment.objects.exists()


# --- plain PCM (vosk-server style) ---


def test_pcm_answers_each_frame_once_and_eof_once_then_closes(token):
    audio = np.concatenate([quiet(300), speech(1000), quiet(900)])
    pcm = pcm16_encode(torch.from_numpy(audio))
    frames = [pcm[o : o + 3200] for o in range(0, len(pcm), 3200)]  # 0.2 s each

    result = exchange(
        f"/ws/media/pcm/{token}",
        ['{"config": {"sample_rate": 8000, "caller": "+15551230001"}}', *frames, '{"eof" : 1}'],
    )

    assert result["sent"][: len(frames)] == [{"partial": ""}] * len(frames)
    # eof gets one answer: the segment's result if a worker (started by other tests) recognized it in
    # STREAM_EOF_WAIT_S, else an empty one.
    (answer,) = result["sent"][len(frames) :]
    assert set(answer) == {"result", "text"}
    assert result["close"] == 1000
    call = Call.objects.get()
    assert (call.protocol, call.status, call.customer.phone) == ("pcm", "ended", "+15551230001")
    assert Segment.objects.filter(call=call).count() == 1


def test_pcm_at_16_khz_stores_segments_at_8_khz(token):
    audio = np.repeat(np.concatenate([quiet(300), speech(1000), quiet(900)]), 2)
    pcm = pcm16_encode(torch.from_numpy(audio))

    frames = [pcm[o : o + 4000] for o in range(0, len(pcm), 4000)]

    exchange(f"/ws/media/pcm/{token}", ['{"config": {"sample_rate": 16000}}', *frames, '{"eof": 1}'])

    segment = Segment.objects.get()
    assert segment.sample_rate == 8000
    assert len(segment.audio.read()) == 44 + 2 * SR * (segment.end_ms - segment.start_ms) // 1000


@pytest.mark.parametrize(
    ("frames", "code", "close_code"),
    [
        ([b"\x00\x00" * 100], "config_expected", 4400),
        (['{"eof": 1}'], "config_expected", 4400),
        (['{"config": {"sample_rate": 44100}}'], "unsupported_media_format", 4415),
        (['{"config": {"sample_rate": 8000}}', b"\x00" * 3], "odd_pcm_frame", 4400),
        (['{"config": {"sample_rate": 8000}}', b"\x00" * 5000], "frame_too_large", 4413),
        (['{"config": {"sample_rate": 8000}}', '{"config": {"sample_rate": 8000}}'], "duplicate_config", 4400),
        (['{"config": {"sample_rate": 8000}}', "hello"], "invalid_json", 4400),
        (['{"config": {"sample_rate": 8000}}', '{"eof": 1}', b"\x00\x00"], "frame_after_eof", 4400),
    ],
    ids=["audio-first", "eof-first", "rate", "odd", "too-large", "config-twice", "not-json", "after-eof"],
)
def test_pcm_bad_input_is_answered_with_an_error_and_a_close_code(token, frames, code, close_code):
    result = exchange(f"/ws/media/pcm/{token}", frames)

    errors = [m for m in result["sent"] if "error" in m]
    if code == "frame_after_eof":
        # eof was answered (and the socket closed) before the late frame was read: it is ignored.
        assert result["close"] == 1000 and not errors
    else:
        assert errors[-1]["code"] == code and result["close"] == close_code


# --- agents' feed ---


def _session_cookie(user) -> list[tuple[bytes, bytes]]:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return [(b"cookie", f"sessionid={session.session_key}".encode()), (b"origin", b"http://127.0.0.1")]


@pytest.mark.parametrize(("staff", "code", "close_code"), [(None, "login_required", 4401), (False, "forbidden", 4403)])
def test_the_agent_feed_needs_the_login_of_an_agent_or_a_supervisor(django_user_model, staff, code, close_code):
    headers = [(b"origin", b"http://127.0.0.1")]
    if staff is not None:
        headers = _session_cookie(django_user_model.objects.create_user("caller-agent", is_staff=staff))

    result = exchange("/ws/agent/", [], headers=headers)

    assert result["sent"][0]["code"] == code and result["close"] == close_code


def test_the_agent_feed_shows_calls_going_live_and_ending(django_user_model, token):
    headers = _session_cookie(django_user_model.objects.create_user("agent", is_staff=True))
    audio = np.concatenate([quiet(300), speech(800), quiet(900)])

    async def scenario() -> list[dict]:
        feed = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
        assert (await feed.connect(timeout=10))[0]
        assert (await feed.receive_json_from(timeout=10))["type"] == "hello"
        await _exchange(f"/ws/media/twilio/{token}", [start_frame(caller="+15551230002"), *media_frames(audio), STOP])
        seen = [await feed.receive_json_from(timeout=10) for _ in range(2)]
        await feed.disconnect()
        return seen

    seen = async_to_sync(scenario)()

    call = Call.objects.get()
    assert seen == [
        {"type": "call", "call": call.pk, "status": "live", "protocol": "twilio", "customer": call.customer_id,
         "caller": "+15551230002", "agent": None},
        {"type": "call", "call": call.pk, "status": "ended", "protocol": "twilio", "customer": call.customer_id,
         "caller": "+15551230002", "agent": None},
    ]  # fmt: skip


def test_lines_are_found_only_by_the_hash_of_their_token(token):
    line = Line.objects.get()
    assert token not in line.token_hash and len(line.token_hash) == 64
    assert services.line_authenticate(token=token) == line
    assert asyncio.iscoroutinefunction(_exchange)


@pytest.mark.parametrize("path", ["/healthz", "/ws/media/pcmx/abc", "/ws/media/pcm/sometoken/extra", "/ws/"])
def test_a_websocket_to_a_path_that_is_no_route_is_refused_not_an_internal_error(path):
    async def scenario() -> bool:
        communicator = WebsocketCommunicator(application, path)
        connected, _ = await communicator.connect(timeout=10)
        await communicator.disconnect()
        return connected

    assert async_to_sync(scenario)() is False
