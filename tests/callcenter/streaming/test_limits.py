"""Load limits of the media sockets: admission (streams per process, queue
depth) and per-stream limits (byte rate, idle time, call duration), through
the real ASGI application, database and Redis (no worker)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
import torch
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from asr_core.audio import mulaw_encode, pcm16_encode
from callcenter.ops import redisconn
from callcenter.asgi import application
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from callcenter.streaming import limits

pytestmark = pytest.mark.django_db(transaction=True)

SR = 8000


@pytest.fixture(autouse=True)
def stream_settings(settings, shared_var_dir):
    settings.STREAM_PARTIAL_INTERVAL_MS = 0  # no model in these tests
    settings.STREAM_START_TIMEOUT_S = 5
    settings.STREAM_MAX_QUEUE_DEPTH = 0


@pytest.fixture
def token() -> str:
    return services.line_create(name="trunk-limits")[1]


def speech(ms: int) -> np.ndarray:
    t = np.arange(SR * ms // 1000) / SR
    return (0.3 * (0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def quiet(ms: int) -> np.ndarray:
    return (np.random.default_rng(0).normal(size=SR * ms // 1000) * 3e-4).astype(np.float32)


def start_frame(sid: str) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"streamSid": sid, "callSid": "CA1", "accountSid": "AC1", "tracks": ["inbound"],
                  "customParameters": {},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    })  # fmt: skip


def media_frames(sid: str, audio: np.ndarray) -> list[str]:
    payload = mulaw_encode(torch.from_numpy(audio))
    return [
        json.dumps({"event": "media", "sequenceNumber": str(i + 2), "streamSid": sid,
                    "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i),
                              "payload": base64.b64encode(payload[o:o + 160]).decode()}})  # fmt: skip
        for i, o in enumerate(range(0, len(payload), 160))
    ]


def stop_frame(sid: str) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": sid, "stop": {"callSid": "CA1"}})


async def _open(token: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws/media/twilio/{token}")
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def _until_closed(communicator: WebsocketCommunicator, timeout: float = 10) -> tuple[list[dict], int]:
    sent = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return sent, output.get("code", 1000)
        sent.append(json.loads(output["text"]))


def test_a_stream_over_the_per_process_cap_is_refused_and_the_others_go_on(settings, token):
    settings.STREAM_MAX_STREAMS = 1
    audio = np.concatenate([quiet(300), speech(800), quiet(900)])

    async def scenario() -> tuple[list[dict], int, list[dict], int]:
        first = await _open(token)
        await first.send_to(text_data=start_frame("MZfirst"))
        second = await _open(token)
        refused, refused_code = await _until_closed(second)
        for frame in [*media_frames("MZfirst", audio), stop_frame("MZfirst")]:
            await first.send_to(text_data=frame)
        sent, code = await _until_closed(first)
        await first.disconnect()
        await second.disconnect()
        # Its slot is free again: a new stream is admitted.
        third = await _open(token)
        await third.send_to(text_data=start_frame("MZthird"))
        await third.send_to(text_data=stop_frame("MZthird"))
        await _until_closed(third)
        await third.disconnect()
        return refused, refused_code, sent, code

    refused, refused_code, sent, code = async_to_sync(scenario)()

    assert refused_code == limits.CLOSE_BUSY == 4503
    assert refused == [{"event": "error", "code": "server_busy",
                        "message": "this server has 1 streams already; try again later"}]  # fmt: skip
    assert (sent, code) == ([], 1000)
    assert sorted(Call.objects.values_list("external_id", "status")) == [("MZfirst", "ended"), ("MZthird", "ended")]
    assert Segment.objects.filter(call__external_id="MZfirst").count() == 1
    assert limits.SLOTS.active == 0


def test_streams_are_refused_while_the_recognition_queue_is_too_deep(settings, token, monkeypatch):
    queue = "test-limits-queue-depth"  # a real Redis list of this test's own, not the workers' queue
    r = redisconn.client()
    r.delete(queue)
    monkeypatch.setattr(limits, "QUEUE", limits.QueueDepth(queue))
    settings.STREAM_MAX_QUEUE_DEPTH = 2
    r.rpush(queue, "a", "b", "c")
    try:
        async def refused() -> tuple[list[dict], int]:
            communicator = await _open(token)
            try:
                return await _until_closed(communicator)
            finally:
                await communicator.disconnect()

        sent, code = async_to_sync(refused)()
        r.delete(queue)
        monkeypatch.setattr(limits, "QUEUE", limits.QueueDepth(queue))

        async def admitted() -> tuple[list[dict], int]:
            communicator = await _open(token)
            await communicator.send_to(text_data=start_frame("MZadmitted"))
            await communicator.send_to(text_data=stop_frame("MZadmitted"))
            try:
                return await _until_closed(communicator)
            finally:
                await communicator.disconnect()

        after = async_to_sync(admitted)()
    finally:
        r.delete(queue)

    assert code == 4503 and sent[0]["code"] == "queue_full" and "3 segments wait" in sent[0]["message"]
    assert after == ([], 1000)
    assert list(Call.objects.values_list("external_id", flat=True)) == ["MZadmitted"]


def test_a_stream_flooding_far_past_four_times_real_time_is_closed_and_keeps_its_segments(token):
    # The defaults: 4x real time, cut 15 s of pacing (a minute of audio) ahead.
    # Two minutes of audio sent at once (about 2.4 MB) were let through at the
    # old 2 MB/s limit.
    audio = np.concatenate([quiet(300), speech(800), quiet(900), speech(3000), quiet(115_000)])

    async def scenario() -> tuple[list[dict], int]:
        communicator = await _open(token)
        await communicator.send_to(text_data=start_frame("MZfast"))
        for frame in media_frames("MZfast", audio):
            await communicator.send_to(text_data=frame)
        try:
            return await _until_closed(communicator, timeout=30)
        finally:
            await communicator.disconnect()

    sent, code = async_to_sync(scenario)()

    assert code == limits.CLOSE_RATE_LIMITED == 4429
    assert sent == [{"event": "error", "code": "rate_limited",
                     "message": "the stream runs more than 15 s ahead of 4x real time"}]  # fmt: skip
    call = Call.objects.get()
    assert call.status == "failed" and call.failure_reason.startswith("rate_limited")
    assert Segment.objects.filter(call=call).exclude(audio="").count() >= 1
    assert limits.SLOTS.active == 0


def test_a_flood_of_empty_pcm_frames_is_cut_like_any_flood(token):
    """An empty binary frame is answered like any other: 20,000 of them at once were all processed
    and answered, never limited. Each frame is charged at least MIN_FRAME_CHARGE bytes."""

    async def scenario() -> tuple[int, int]:
        communicator = WebsocketCommunicator(application, f"/ws/media/pcm/{token}")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.send_to(text_data=json.dumps({"config": {"sample_rate": SR}}))
        for _ in range(20_000):
            await communicator.send_input({"type": "websocket.receive", "bytes": b""})
        answers = 0
        try:
            while True:
                output = await communicator.receive_output(timeout=30)
                if output["type"] == "websocket.close":
                    return answers, output.get("code", 1000)
                answers += 1
        finally:
            await communicator.disconnect()

    answers, code = async_to_sync(scenario)()

    assert code == limits.CLOSE_RATE_LIMITED and answers < 20_000
    assert Call.objects.get().failure_reason.startswith("rate_limited")


def test_a_client_waiting_for_each_answer_is_paced_to_the_speed_limit_not_cut(settings, token):
    # vosk-server's own client sends its next frame when the last one is
    # answered, as fast as that goes: it is held to the speed limit instead.
    settings.STREAM_MAX_SPEED = 2
    settings.STREAM_EOF_WAIT_S = 1  # no worker here: eof answers with what was recognized (nothing)
    audio = np.concatenate([quiet(300), speech(800), quiet(900), speech(2000), quiet(6000)])  # 10 s
    pcm = pcm16_encode(torch.from_numpy(audio))
    frame_bytes = 3200  # 200 ms at 8 kHz

    async def scenario() -> tuple[float, list[dict], int]:
        communicator = WebsocketCommunicator(application, f"/ws/media/pcm/{token}")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.send_to(text_data=json.dumps({"config": {"sample_rate": SR}}))
        started = time.monotonic()
        answers = []
        for offset in range(0, len(pcm), frame_bytes):
            await communicator.send_to(bytes_data=pcm[offset : offset + frame_bytes])
            answers.append(json.loads(await communicator.receive_from(timeout=10)))
        elapsed = time.monotonic() - started
        await communicator.send_to(text_data='{"eof": 1}')
        try:
            sent, code = await _until_closed(communicator, timeout=30)
        finally:
            await communicator.disconnect()
        return elapsed, answers + sent, code

    elapsed, answers, code = async_to_sync(scenario)()

    # 10 s of audio at 2x real time with 2 s of burst (4 s of audio): at least 3 s.
    assert elapsed >= 2.8, elapsed
    assert code == 1000 and not any("error" in a for a in answers)
    assert Call.objects.get().status == "ended"
def test_an_idle_stream_is_closed_and_its_call_ended(settings, token):
    settings.STREAM_IDLE_TIMEOUT_S = 1
    audio = np.concatenate([quiet(300), speech(800), quiet(900)])

    async def scenario() -> tuple[list[dict], int]:
        communicator = await _open(token)
        await communicator.send_to(text_data=start_frame("MZidle"))
        for frame in media_frames("MZidle", audio):
            await communicator.send_to(text_data=frame)
        try:
            return await _until_closed(communicator, timeout=5)
        finally:
            await communicator.disconnect()

    sent, code = async_to_sync(scenario)()

    assert code == 4408 and sent == [{"event": "error", "code": "idle_timeout", "message": "no frame for 1 s"}]
    call = Call.objects.get()
    assert call.status == "ended" and call.failure_reason.startswith("idle_timeout")
    assert Segment.objects.filter(call=call).exclude(audio="").count() == 1


def test_an_idle_stream_whose_close_is_cut_by_the_disconnect_still_closes_its_call(settings, token, monkeypatch):
    """The idle timer closes the socket and then hangs up; the disconnect that the close brings
    cancels the socket's timers. Here the call's closing is made slow so that the disconnect comes in
    the middle of it: the call must still leave the live calls and the gauge, as on every close."""
    from callcenter.ops import metrics
    from callcenter.streaming import session as session_module
    from callcenter.streaming.liveness import LIVE_CALLS

    settings.STREAM_IDLE_TIMEOUT_S = 1
    audio = np.concatenate([quiet(300), speech(800), quiet(900)])
    call_end = session_module._call_end

    def slow_call_end(**kwargs):
        time.sleep(1.0)
        return call_end(**kwargs)

    monkeypatch.setattr(session_module, "_call_end", slow_call_end)
    live_before = metrics.CALLS_LIVE._value.get()

    async def scenario() -> tuple[list[dict], int, bool]:
        communicator = await _open(token)
        await communicator.send_to(text_data=start_frame("MZidlecut"))
        for frame in media_frames("MZidlecut", audio):
            await communicator.send_to(text_data=frame)
        try:
            sent, code = await _until_closed(communicator, timeout=5)
        finally:
            await communicator.disconnect()  # while the call's closing sleeps in slow_call_end
        for _ in range(100):
            if not session_module._CLOSING:
                break
            await asyncio.sleep(0.05)
        return sent, code, not session_module._CLOSING

    sent, code, closed = async_to_sync(scenario)()

    assert code == 4408 and sent[0]["code"] == "idle_timeout" and closed
    call = Call.objects.get()
    assert call.status == "ended" and call.failure_reason.startswith("idle_timeout")
    assert call.pk not in LIVE_CALLS.call_ids and metrics.CALLS_LIVE._value.get() == live_before
    assert Segment.objects.filter(call=call).exclude(audio="").count() == 1


def test_a_call_longer_than_the_maximum_is_closed_keeping_its_segments(settings, token):
    settings.STREAM_MAX_CALL_S = 1
    settings.STREAM_IDLE_TIMEOUT_S = 30

    async def scenario() -> tuple[list[dict], int]:
        communicator = await _open(token)
        await communicator.send_to(text_data=start_frame("MZlong"))
        frames = media_frames("MZlong", np.concatenate([quiet(300), speech(800), quiet(700), speech(2000)]))
        for frame in frames[:60]:  # the first segment ends after 1.8 s of audio: 90 frames
            await communicator.send_to(text_data=frame)
        await asyncio.sleep(0.1)
        for frame in frames[60:100]:
            await communicator.send_to(text_data=frame)
        await asyncio.sleep(1.2)
        try:
            return await _until_closed(communicator, timeout=5)
        finally:
            await communicator.disconnect()

    sent, code = async_to_sync(scenario)()

    assert code == 4408 and sent[0]["code"] == "max_duration"
    call = Call.objects.get()
    assert call.status == "ended" and call.failure_reason.startswith("max_duration")
    # The finished segment and the one in progress at the cut, flushed at hangup.
    assert Segment.objects.filter(call=call).exclude(audio="").count() == 2


def test_byte_budget_allows_bursts_then_says_how_long_to_wait():
    budget = limits.ByteBudget(1000, now=0.0, burst_s=2.0)

    assert budget.take(2000, now=0.0) == 0.0
    assert budget.take(500, now=0.0) == pytest.approx(0.5)  # owed: fits in 0.5 s
    assert budget.take(500, now=0.5) == pytest.approx(0.5)  # 500 came back, 500 more owed
    assert budget.take(0, now=2.0) == 0.0
    budget.set_rate(4000, now=2.0)  # the stream's format is known: a new rate, burst capped
    assert budget.capacity == 8000 and budget.tokens == pytest.approx(1000)


def test_realtime_byte_rates_follow_the_protocol_and_sample_rate():
    assert limits.realtime_bytes_per_s(protocol="pcm", sample_rate=8000) == 16_000
    assert limits.realtime_bytes_per_s(protocol="pcm", sample_rate=16000) == 32_000
    twilio_frame = media_frames("MZ" + "0" * 32, quiet(20))[0]  # one 20 ms frame
    assert abs(limits.realtime_bytes_per_s(protocol="twilio", sample_rate=8000) - 50 * len(twilio_frame)) < 3000


@pytest.mark.parametrize(
    "kwargs",
    [{"max_streams": 0}, {"max_queue_depth": -1}, {"max_call_s": 0}, {"idle_timeout_s": -1}, {"max_speed": 0}],
)
def test_limits_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        limits.Limits(**kwargs)
