"""Which calls this web process holds, told to Redis.

Every ``STREAM_HEARTBEAT_S`` the process renews one key per live call
(expiring after three periods). A web process that dies stops renewing them;
the sweeper (``tasks/maintenance.py``) then closes those calls as failed,
keeping their segments. The renewal runs in a thread, never on the event
loop; a Redis outage is logged and the next period tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from django.conf import settings

logger = logging.getLogger(__name__)

OWNER = f"{socket.gethostname()}:{os.getpid()}"
TTL_PERIODS = 3


class LiveCalls:
    def __init__(self) -> None:
        self.call_ids: set[int] = set()
        self._task: asyncio.Task | None = None

    def add(self, call_id: int) -> None:
        self.call_ids.add(call_id)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._renew_forever())

    def discard(self, call_id: int) -> None:
        self.call_ids.discard(call_id)

    async def _renew_forever(self) -> None:
        from callcenter.ops import redisconn

        period = settings.STREAM_HEARTBEAT_S
        loop = asyncio.get_running_loop()
        failing = False
        while self.call_ids:
            try:
                await loop.run_in_executor(
                    None,
                    lambda ids=sorted(self.call_ids): redisconn.calls_alive_renew(
                        call_ids=ids, owner=OWNER, ttl_s=period * TTL_PERIODS
                    ),
                )
                if failing:
                    logger.info("live-call heartbeat renewed again (%d calls)", len(self.call_ids))
                failing = False
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next period
                if not failing:
                    logger.warning("live-call heartbeat failed (Redis: %s); retrying every %d s", exc, period)
                failing = True
            await asyncio.sleep(period)


LIVE_CALLS = LiveCalls()
