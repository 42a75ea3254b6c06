"""Health, readiness and metrics: the HTTP checks and the websocket one that
crosses the worker."""

from __future__ import annotations

import re
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from callcenter.asgi import application
from callcenter.calls import services


@pytest.mark.django_db
def test_healthz_reports_the_database(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db(transaction=True)
def test_health_websocket_gets_a_pong_from_the_worker(celery_worker):
    async def talk() -> list[dict]:
        communicator = WebsocketCommunicator(application, "/ws/health/")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        try:
            return [await communicator.receive_json_from(timeout=30) for _ in range(2)]
        finally:
            await communicator.disconnect()

    assert async_to_sync(talk)() == [{"type": "hello"}, {"type": "pong", "worker": celery_worker.nodename}]


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
