"""Sending live messages to channel-layer groups from a Celery worker (finals, alerts, analytics)."""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer

PUBLISH_TIMEOUT_S = 10


class Publisher:
    """Sends to channel-layer groups from the worker through one event loop
    kept running in a thread of the worker process, so the layer's Redis
    connections stay open between tasks (``async_to_sync`` would start a new
    loop, and connect again, for every message)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="channel-layer", daemon=True)
                self._thread.start()
            return self._loop

    def send(self, groups: tuple[str, ...], event: dict) -> None:
        layer = get_channel_layer()

        async def send_all() -> None:
            for group in groups:
                await layer.group_send(group, event)

        asyncio.run_coroutine_threadsafe(send_all(), self._running_loop()).result(timeout=PUBLISH_TIMEOUT_S)


publisher = Publisher()
