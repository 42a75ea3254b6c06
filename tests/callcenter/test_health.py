"""Health checks: the HTTP one and the websocket one that crosses the worker."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from callcenter.asgi import application


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


@pytest.mark.django_db
def test_metrics_expose_the_live_call_counters(client):
    response = client.get("/metrics")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "callcenter_calls_live" in body and "callcenter_partials_total" in body
