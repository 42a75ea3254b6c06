"""Health checks of the running system.

- ``GET /healthz``: the web process answers and its database does
  (liveness: restart the process when this fails).
- ``GET /readyz``: this deployment can take calls: the database answers,
  the broker (Redis) answers, and at least one worker process has the
  recognizer loaded (its heartbeat key, ``tasks/maintenance.py``). 503 with
  what is missing otherwise (readiness: keep traffic away meanwhile).
- ``GET /metrics``: Prometheus metrics: this web process's own
  (``callcenter.metrics``) and the system's, computed at scrape
  (``callcenter.clustermetrics``).
- ``ws /ws/health/``: the whole pipeline. On connect the consumer enqueues
  ``system.ping`` with its own channel name; the worker answers through the
  channel layer, and the client receives ``{"type": "pong", ...}``. That is the
  path every live transcript takes: web -> Redis queue -> worker -> channel
  layer -> web -> websocket.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("health check: database unavailable: %s", exc)
        return False
    return True


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    if not _database_ok():
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    from callcenter import redisconn

    body: dict[str, object] = {"database": "ok" if _database_ok() else "unavailable"}
    workers: dict[str, str] = {}
    try:
        redisconn.client().ping()
        body["broker"] = "ok"
        workers = redisconn.workers_ready()
    except Exception as exc:  # noqa: BLE001 - any Redis failure means not ready
        logger.warning("readiness check: Redis unavailable: %s", exc)
        body["broker"] = "unavailable"
    body["workers"] = len(workers)
    body["models"] = sorted(set(workers.values()))
    if body["broker"] == "ok" and not workers:
        body["worker"] = "no worker has the model loaded"
    ready = body["database"] == "ok" and body["broker"] == "ok" and bool(workers)
    body["status"] = "ready" if ready else "not_ready"
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from callcenter import clustermetrics

    clustermetrics.register()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def _enqueue_ping(reply_channel: str) -> None:
    from tasks.system import ping

    ping.delay(reply_channel=reply_channel)


class HealthConsumer(AsyncJsonWebsocketConsumer):
    # --- lifecycle ---
    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"type": "hello"})
        # Publishing to the broker is blocking network I/O: not on the loop.
        await sync_to_async(_enqueue_ping, thread_sensitive=False)(self.channel_name)

    # --- incoming frames: none expected ---
    async def receive_json(self, content, **kwargs) -> None:
        await self.send_json({"type": "error", "code": "unexpected_message"})

    # --- channel-layer handlers ---
    async def system_pong(self, event: dict) -> None:
        await self.send_json({"type": "pong", "worker": event["worker"]})
