"""Health checks of the running system.

- ``GET /healthz``: the web process answers and its database does.
- ``GET /metrics``: the web process's Prometheus metrics (media sockets,
  segments, partials, protocol errors).
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


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("health check: database unavailable: %s", exc)
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
