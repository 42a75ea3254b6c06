"""Health, readiness and metrics: the HTTP checks and the websocket one that
crosses the worker, and who may see them."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from asgiref.sync import async_to_sync
from celery.signals import before_task_publish
from channels.testing import WebsocketCommunicator

from callcenter.asgi import application
from callcenter.calls import services
from callcenter.ops import health
from callcenter.ops.health import PingGate
from tests.fixtures.calls import session_cookie

OPS_TOKEN = "ops-token-for-the-tests-0123456789"
OUTSIDER = "203.0.113.9"  # not in OPS_ALLOWED_NETWORKS (loopback by default)


@pytest.fixture
def ops_token(settings) -> str:
    settings.OPS_TOKEN = OPS_TOKEN
    return OPS_TOKEN


@pytest.fixture
def pings_published() -> list[str]:
    """Names of the tasks this process publishes meanwhile (Celery's own signal, real broker)."""
    published: list[str] = []

    def count(sender: str, **kwargs: object) -> None:
        published.append(sender)

    before_task_publish.connect(count, weak=False)
    yield published
    before_task_publish.disconnect(count)


def _from(address: str):
    """The ASGI application as a client at ``address`` reaches it (Daphne fills in ``client``)."""

    async def app(scope, receive, send):
        return await application({**scope, "client": (address, 50_000)}, receive, send)

    return app


def _session_cookie(django_user_model, username: str, *, is_staff: bool) -> bytes:
    return session_cookie(django_user_model.objects.create_user(username, is_staff=is_staff)).encode()


async def _health_socket(address: str, path: str = "/ws/health/", headers=None) -> tuple[list[dict], int | None]:
    """What a health socket receives: its first message(s) and its close code (None: still open)."""
    communicator = WebsocketCommunicator(_from(address), path, headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    try:
        first = await communicator.receive_json_from(timeout=10)
        if first["type"] == "error":
            closed = await communicator.receive_output(timeout=10)
            return [first], closed.get("code")
        return [first, await communicator.receive_json_from(timeout=30)], None
    finally:
        await communicator.disconnect()


@pytest.mark.django_db
def test_healthz_says_ok_and_nothing_more_to_anyone(client):
    response = client.get("/healthz", REMOTE_ADDR=OUTSIDER)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db(transaction=True)
def test_health_websocket_gets_a_pong_from_the_worker(celery_worker):
    assert async_to_sync(_health_socket)("127.0.0.1") == (
        [{"type": "hello"}, {"type": "pong", "worker": celery_worker.nodename}], None
    )


@pytest.mark.django_db(transaction=True)
def test_a_health_socket_answers_any_frame_it_did_not_expect_and_still_gets_its_pong(celery_worker):
    """Text that is not JSON and binary frames get the answer JSON gets, and the socket goes on to
    its pong (they closed it with an internal error, and another socket sharing its ping waited 30 s)."""

    async def scenario() -> list[dict]:
        communicator = WebsocketCommunicator(_from("127.0.0.1"), "/ws/health/")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        try:
            got = [await communicator.receive_json_from(timeout=10)]
            for frame in ({"text_data": "{not json"}, {"bytes_data": b"\x00"}, {"text_data": "{}"}):
                await communicator.send_to(**frame)
            while len(got) < 5:
                got.append(await communicator.receive_json_from(timeout=30))
            return got
        finally:
            await communicator.disconnect()

    got = async_to_sync(scenario)()

    assert got[0] == {"type": "hello"}
    assert sorted(m["type"] for m in got[1:]) == ["error", "error", "error", "pong"]
    assert all(m["code"] == "unexpected_message" for m in got[1:] if m["type"] == "error")


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_once_a_worker_has_loaded_the_model(client, celery_worker):

    deadline = time.monotonic() + 60
    while (response := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready" and body["database"] == "ok" and body["broker"] == "ok"
    assert body["workers"] >= 1 and all(re.fullmatch(r"[0-9a-f]{64}", m) for m in body["models"])


@pytest.mark.django_db
def test_readyz_is_not_ready_without_the_broker(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable", "workers": 0, "models": [],
                               "status": "not_ready"}  # fmt: skip


@pytest.mark.django_db
def test_metrics_expose_process_and_system_metrics(client):
    call = services.call_start(protocol="pcm")
    services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=900, sample_rate=8000)

    response = client.get("/metrics")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    for name in [
        "callcenter_calls_live", "callcenter_partials_total", "callcenter_streams_refused_total",
        "callcenter_adaptations_total", "callcenter_adaptation_wer_delta_bucket", "callcenter_queue_depth",
        "callcenter_workers_ready", "callcenter_recognition_latency_seconds_bucket",
    ]:  # fmt: skip
        assert name in body, name
    assert 'callcenter_segments_stored{status="pending"} 1.0' in body
    assert 'callcenter_segments_stored{status="recognized"} 0.0' in body
    assert "callcenter_calls_live_all 1.0" in body
    for queue in ("recognition", "adaptation"):
        assert f'callcenter_queue_depth{{queue="{queue}"}}' in body, queue


@pytest.mark.django_db
def test_metrics_still_answer_when_redis_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    response = client.get("/metrics")

    assert response.status_code == 200
    body = response.content.decode()
    assert "callcenter_segments_stored{" in body and "callcenter_queue_depth" not in body


# --- operators only -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_readyz_and_metrics_refuse_a_client_outside_the_allowed_networks(client, ops_token, path):
    anonymous = client.get(path, REMOTE_ADDR=OUTSIDER)
    wrong_token = client.get(path, REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer not-the-token-at-all-0000")
    token_elsewhere = client.get(f"{path}?token={ops_token}", REMOTE_ADDR=OUTSIDER)

    for response in (anonymous, wrong_token, token_elsewhere):
        assert response.status_code == 403
        assert response.content.decode().startswith("operators only: send Authorization: Bearer <OPS_TOKEN>")
        assert b"callcenter_" not in response.content and b"models" not in response.content


@pytest.mark.django_db
def test_readyz_and_metrics_answer_the_ops_token_from_anywhere(client, ops_token):
    metrics = client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION=f"Bearer {ops_token}")
    ready = client.get("/readyz", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION=f"bearer {ops_token}")

    assert metrics.status_code == 200 and "callcenter_queue_depth" in metrics.content.decode()
    assert ready.status_code in (200, 503) and ready.json()["broker"] == "ok"


@pytest.mark.django_db
def test_readyz_and_metrics_answer_a_staff_user_but_not_another_user(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("someone", password=None))
    refused = client.get("/metrics", REMOTE_ADDR=OUTSIDER)
    client.force_login(django_user_model.objects.create_user("operator", password=None, is_staff=True))
    staff = client.get("/metrics", REMOTE_ADDR=OUTSIDER)

    assert refused.status_code == 403
    assert staff.status_code == 200 and "callcenter_queue_depth" in staff.content.decode()


@pytest.mark.django_db
def test_ops_allowed_networks_replace_loopback(client, settings):
    import ipaddress

    settings.OPS_ALLOWED_NETWORKS = (ipaddress.ip_network("10.20.0.0/16"),)

    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/healthz", REMOTE_ADDR="10.99.0.1").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_health_socket_refuses_anonymous_clients_without_queueing(ops_token, pings_published):
    async def both() -> list:
        return [await _health_socket(OUTSIDER),
                await _health_socket(OUTSIDER, "/ws/health/?token=not-the-token-at-all-0000")]  # fmt: skip

    for messages, code in async_to_sync(both)():
        assert code == 4403
        assert messages[0]["type"] == "error" and messages[0]["code"] == "forbidden"
        assert messages[0]["message"].startswith("operators only")
    assert pings_published == []


@pytest.mark.django_db(transaction=True)
def test_the_health_socket_answers_the_token_or_a_staff_session_from_anywhere(
    celery_worker, ops_token, django_user_model
):
    worker = {"type": "pong", "worker": celery_worker.nodename}
    staff = [(b"cookie", _session_cookie(django_user_model, "ops-staff", is_staff=True))]
    agent = [(b"cookie", _session_cookie(django_user_model, "ops-agent", is_staff=False))]

    async def each() -> list:  # one event loop for the channel layer (tests/conftest.py)
        return [
            await _health_socket(OUTSIDER, f"/ws/health/?token={ops_token}"),
            await _health_socket(OUTSIDER, headers=[(b"authorization", f"Bearer {ops_token}".encode())]),
            await _health_socket(OUTSIDER, headers=staff),
            await _health_socket(OUTSIDER, headers=agent),
            await _health_socket("127.0.0.1", f"/ws/health/?token={ops_token}",
                                 headers=[(b"origin", b"https://evil.example.com")]),  # fmt: skip
        ]

    by_query, by_header, by_staff, not_staff, foreign_page = async_to_sync(each)()

    assert by_query == by_header == by_staff == ([{"type": "hello"}, worker], None)
    assert not_staff[1] == 4403 and foreign_page[1] == 4403


@pytest.mark.django_db(transaction=True)
def test_many_health_sockets_at_once_queue_one_ping_and_all_get_its_pong(celery_worker, pings_published):
    async def many(n: int) -> list[tuple[list[dict], int | None]]:
        return await asyncio.gather(*(_health_socket("127.0.0.1") for _ in range(n)))

    answers = async_to_sync(many)(8)

    assert answers == [([{"type": "hello"}, {"type": "pong", "worker": celery_worker.nodename}], None)] * 8
    assert pings_published == ["system.ping"]


@pytest.mark.django_db(transaction=True)
def test_a_health_socket_right_after_another_gets_its_answer_without_queueing(celery_worker, pings_published,
                                                                               monkeypatch):
    # A gate of its own (no answer left from an earlier test), whose interval a loaded machine's
    # second connection cannot outlast (the test suite runs in two processes on 2 cores).
    monkeypatch.setattr(health, "PING_GATE", PingGate(interval_s=10.0, timeout_s=health.PING_TIMEOUT_S))

    async def two() -> list:
        return [await _health_socket("127.0.0.1"), await _health_socket("127.0.0.1")]

    pong = ([{"type": "hello"}, {"type": "pong", "worker": celery_worker.nodename}], None)
    assert async_to_sync(two)() == [pong, pong]
    assert pings_published == ["system.ping"]


def test_a_slow_workers_answer_is_shared_for_the_interval_after_it_came():
    async def scenario() -> tuple:
        gate = PingGate(interval_s=0.3, timeout_s=5.0)
        ping, sent = await gate.join()
        await asyncio.sleep(0.5)              # the worker answers after more than the interval
        ping.set_result({"worker": "w"})
        await asyncio.sleep(0)                # the answer's callbacks run
        right_after, must_send = await gate.join()
        await asyncio.sleep(0.35)
        _, must_send_later = await gate.join()
        return sent, right_after is ping, must_send, must_send_later

    assert async_to_sync(scenario)() == (True, True, False, True)


def test_the_ping_gate_sends_one_ping_at_a_time_and_at_most_one_per_interval():
    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        gate = PingGate(interval_s=0.3, timeout_s=1.0)
        seen = {}
        first, seen["first"] = await gate.join()
        shared, seen["shared"] = await gate.join()
        seen["same_ping"] = shared is first
        first.set_result(None)  # the socket that sent it closed before its answer
        started = loop.time()
        again, seen["again"] = await gate.join()  # the sharer asks again, once the interval is over
        seen["waited"] = loop.time() - started
        again.set_result({"worker": "w"})
        answered, seen["answered"] = await gate.join()  # less than the interval after: the same answer
        seen["same_answer"] = answered is again
        await asyncio.sleep(0.35)
        lost, seen["after_interval"] = await gate.join()
        await asyncio.sleep(1.05)  # never answered: given up after the timeout
        _, seen["after_timeout"] = await gate.join()
        return seen

    seen = async_to_sync(scenario)()

    assert (seen["first"], seen["shared"], seen["same_ping"]) == (True, False, True)
    assert seen["again"] is True and 0.25 <= seen["waited"] < 0.6
    assert (seen["answered"], seen["same_answer"]) == (False, True)
    assert seen["after_interval"] is True and seen["after_timeout"] is True
