"""Media sockets that must not die or leak: quiet calls and feeds over the
real Daphne and Redis, strings a client could use to crash a consumer, and
what a consumer that does crash gives back."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from asr_core.audio import pcm16_encode
from callcenter.asgi import application
from callcenter.calls import services
from callcenter.calls.models import Call, Customer
from callcenter.live import messages
from callcenter.streaming import consumers, limits, protocols
from callcenter.streaming.session import CallSession
from tests.fixtures.calls import session_cookie, twilio_start_frame

pytestmark = pytest.mark.django_db(transaction=True)

SR = 8000
QUIET_S = 32  # longer than any timeout that killed quiet sockets (redis-py's 5 s)


@pytest.fixture
def token() -> str:
    return services.line_create(name="trunk-reliability")[1]


def silence_frame(ms: int = 200) -> bytes:
    noise = np.random.default_rng(1).normal(size=SR * ms // 1000) * 1e-4  # hold-music-free line hiss
    return pcm16_encode(__import__("torch").from_numpy(noise.astype(np.float32)))


@pytest.fixture
def supervisor_headers(django_user_model, web_server) -> dict[str, str]:
    user = django_user_model.objects.create_user("supervisor-quiet", is_staff=True, is_superuser=True)
    return {"Cookie": session_cookie(user), "Origin": web_server.http_url}


# --- quiet sockets over the real server ---


def test_a_silent_call_and_a_quiet_agent_feed_stay_open_for_half_a_minute(web_server, token, supervisor_headers):
    """Hold music and silence are normal: a PCM call streaming only line hiss
    in real time, and an agent feed with nothing to say, for 32 s. The feed hears of the call's
    start and end, and of its analytics (sent by the worker when the call ends: before or after
    the end, as the processes run); the supervisor's feed also carries whatever other calls of the
    test server still send, which are not counted."""
    caller = "+15550104242"

    async def this_calls(feed, call_id: int | None = None) -> dict:
        """The feed's next message about this call: by its id once known, else by its caller."""
        while True:
            message = json.loads(await asyncio.wait_for(feed.recv(), 10))
            ours = message.get("caller") == caller if call_id is None else message.get("call") == call_id
            if ours:
                return message

    async def until_ended(feed, call_id: int) -> list[dict]:
        messages = [await this_calls(feed, call_id)]
        while not (messages[-1]["type"] == "call" and messages[-1]["status"] != "live"):
            messages.append(await this_calls(feed, call_id))
        return messages

    async def scenario() -> tuple[list[dict], list[dict], int | None, float]:
        feed_messages: list[dict] = []
        async with websockets.connect(f"{web_server.ws_url}/ws/agent/", additional_headers=supervisor_headers) as feed:
            assert json.loads(await feed.recv())["type"] == "hello"
            async with websockets.connect(f"{web_server.ws_url}/ws/media/pcm/{token}") as media:
                await media.send(json.dumps({"config": {"sample_rate": SR, "caller": caller}}))
                feed_messages.append(await this_calls(feed))  # the call went live
                answers, started, frame = [], time.monotonic(), silence_frame()
                index = 0
                while time.monotonic() - started < QUIET_S:
                    await media.send(frame)
                    answers.append(json.loads(await asyncio.wait_for(media.recv(), 10)))
                    index += 1
                    await asyncio.sleep(max(0.0, started + index * 0.2 - time.monotonic()))
                quiet_for = time.monotonic() - started
                # Both sockets still work after the quiet: the call ends
                # normally, and the feed hears of it.
                await media.send('{"eof": 1}')
                answers.append(json.loads(await asyncio.wait_for(media.recv(), 10)))
                await asyncio.wait_for(media.wait_closed(), 10)
                media_close = media.close_code
            feed_messages.extend(await until_ended(feed, feed_messages[0]["call"]))
        return answers, feed_messages, media_close, quiet_for

    answers, feed_messages, media_close, quiet_for = async_to_sync(scenario)()

    assert quiet_for >= QUIET_S
    assert all(a == {"partial": ""} for a in answers[:-1]) and answers[-1]["text"] == ""
    assert media_close == 1000
    statuses = [m["status"] for m in feed_messages if m["type"] == "call"]
    assert statuses == ["live", "ended"], feed_messages
    assert {m["type"] for m in feed_messages} <= {"call", "analytics"}, feed_messages
    assert Call.objects.get().status == "ended"


# --- strings that crashed a consumer ---


@pytest.mark.parametrize(
    "frame",
    [
        twilio_start_frame("MZ\ud800bad"),
        twilio_start_frame("MZagent", agent="\ud800"),
        twilio_start_frame("MZcustomer", customer_id="cust\udfff"),
        twilio_start_frame("MZnul\x00"),
        twilio_start_frame("MZcaller", caller="+1555\n2026-12-02 CRITICAL forged"),
    ],
    ids=["surrogate-stream-sid", "surrogate-agent", "surrogate-customer-id", "nul-stream-sid", "newline-caller"],
)
def test_control_characters_and_lone_surrogates_are_refused_without_a_crash(token, frame):
    async def scenario() -> tuple[list[dict], int]:
        communicator = WebsocketCommunicator(application, f"/ws/media/twilio/{token}")
        assert (await communicator.connect(timeout=10))[0]
        await communicator.send_to(text_data=frame)
        sent = []
        while True:
            output = await communicator.receive_output(timeout=10)
            if output["type"] == "websocket.close":
                await communicator.disconnect()
                return sent, output["code"]
            sent.append(json.loads(output["text"]))

    sent, code = async_to_sync(scenario)()

    assert code == protocols.CLOSE_PROTOCOL_ERROR
    assert [m["code"] for m in sent] == ["invalid_message"]
    assert "control character or a lone surrogate" in sent[0]["message"]
    assert not Call.objects.exists() and not Customer.objects.exists()
    assert limits.SLOTS.active == 0


def test_bad_strings_from_a_line_token_holder_never_use_up_the_servers_stream_slots(web_server, token):
    """The probe that locked a server out: more crashing starts than it has
    slots (50), then a real call, over the real Daphne."""

    async def probe(index: int) -> tuple[dict, int]:
        async with websockets.connect(f"{web_server.ws_url}/ws/media/twilio/{token}") as ws:
            await ws.send(twilio_start_frame(f"MZprobe{index}\ud800", agent="\ud800", customer_id="\ud800"))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.wait_for(ws.wait_closed(), 10)
            return answer, ws.close_code

    async def scenario() -> tuple[list[tuple[dict, int]], dict]:
        probes = [await probe(i) for i in range(55)]
        async with websockets.connect(f"{web_server.ws_url}/ws/media/pcm/{token}") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": SR}}))
            await ws.send(silence_frame())
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send('{"eof": 1}')
            await asyncio.wait_for(ws.recv(), 10)
        return probes, answer

    probes, answer = async_to_sync(scenario)()

    assert {(a["code"], code) for a, code in probes} == {("invalid_message", 4400)}
    assert answer == {"partial": ""}  # admitted, not 4503
    assert list(Call.objects.values_list("protocol", flat=True)) == ["pcm"]


# --- a consumer that crashes anyway ---


async def _slots_held(expected: int, timeout: float = 5.0) -> int:
    """This process's held stream slots, once they reach ``expected`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while limits.SLOTS.active != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return limits.SLOTS.active


def test_an_internal_error_closes_with_a_code_daphne_sends_and_gives_everything_back(token, monkeypatch):
    async def broken_feed(self, samples, **kwargs):
        raise RuntimeError("a bug in the audio path")

    monkeypatch.setattr(CallSession, "feed", broken_feed)

    async def scenario() -> tuple[list[dict], int, int]:
        communicator = WebsocketCommunicator(application, f"/ws/media/pcm/{token}")
        assert (await communicator.connect(timeout=10))[0]
        await communicator.send_to(text_data=json.dumps({"config": {"sample_rate": SR}}))
        held = await _slots_held(1)
        await communicator.send_to(bytes_data=silence_frame())
        sent = [json.loads((await communicator.receive_output(timeout=10))["text"])]
        close = await communicator.receive_output(timeout=10)
        await communicator.disconnect()
        return sent, close["code"], held

    sent, code, held = async_to_sync(scenario)()

    # Daphne refuses to send 1011 (only 1000 and 3000-4999): the old code
    # never reached the client, and the consumer died holding its slot.
    assert code == protocols.CLOSE_INTERNAL_ERROR and 3000 <= code <= 4999
    assert sent == [{"error": "internal server error", "code": "internal_error"}]
    assert held == 1 and limits.SLOTS.active == 0
    call = Call.objects.get()
    assert call.status == "failed" and call.failure_reason.startswith("internal_error")


def test_a_consumer_killed_by_an_error_outside_every_handler_still_gives_back_its_slot_and_call(token, monkeypatch):
    async def broken_handler(self, event):
        raise RuntimeError("a bug in a channel-layer handler")

    monkeypatch.setattr(consumers.PcmMediaConsumer, "transcript_message", broken_handler)

    async def scenario() -> tuple[int, BaseException | None]:
        communicator = WebsocketCommunicator(application, f"/ws/media/pcm/{token}")
        assert (await communicator.connect(timeout=10))[0]
        await communicator.send_to(text_data=json.dumps({"config": {"sample_rate": SR}}))
        await communicator.send_to(bytes_data=silence_frame())
        await communicator.receive_from(timeout=10)
        held = await _slots_held(1)
        call_id = await asyncio.to_thread(lambda: Call.objects.get().pk)
        await get_channel_layer().group_send(
            messages.call_group(call_id), {"type": "transcript.message", "message": {"type": "final"}}
        )
        crashed = None
        try:
            await communicator.wait(timeout=10)
        except RuntimeError as exc:
            crashed = exc
        return held, crashed

    held, crashed = async_to_sync(scenario)()

    assert isinstance(crashed, RuntimeError)
    assert held == 1 and limits.SLOTS.active == 0
    call = Call.objects.get()
    assert call.status == "failed" and call.failure_reason == "internal_error: the consumer failed"
