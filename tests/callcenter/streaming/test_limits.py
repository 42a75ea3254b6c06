"""Load limits of the media sockets: admission (streams per process, queue
depth) and per-stream limits (byte rate, idle time, call duration), through
the real ASGI application, database and Redis (no worker)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import torch
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from asr_core.audio import mulaw_encode
from callcenter import redisconn
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


def test_a_stream_over_its_byte_rate_is_closed_and_keeps_its_segments(settings, token):
    settings.STREAM_MAX_BYTES_PER_S = 16_000  # 32 kB of burst: about 100 Twilio frames sent at once
    audio = np.concatenate([quiet(300), speech(800), quiet(900), speech(3000)])

    async def scenario() -> tuple[list[dict], int]:
        communicator = await _open(token)
        await communicator.send_to(text_data=start_frame("MZfast"))
        for frame in media_frames("MZfast", audio):
            await communicator.send_to(text_data=frame)
        try:
            return await _until_closed(communicator)
        finally:
            await communicator.disconnect()

    sent, code = async_to_sync(scenario)()

    assert code == 4429 and sent == [{"event": "error", "code": "rate_limited",
                                      "message": "more than 16000 bytes per second on this stream"}]  # fmt: skip
    call = Call.objects.get()
    assert call.status == "failed" and call.failure_reason.startswith("rate_limited")
    assert Segment.objects.filter(call=call).exclude(audio="").count() >= 1


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


def test_byte_budget_allows_bursts_then_the_configured_rate():
    budget = limits.ByteBudget(1000, now=0.0, burst_s=2.0)

    assert budget.spend(2000, now=0.0)
    assert not budget.spend(1, now=0.0)
    assert not budget.spend(600, now=0.5)  # 500 bytes came back
    assert budget.spend(500, now=0.5)
    assert budget.spend(1000, now=1.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_streams": 0}, {"max_queue_depth": -1}, {"max_call_s": 0}, {"idle_timeout_s": -1}, {"max_bytes_per_s": 0}],
)
def test_limits_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        limits.Limits(**kwargs)
