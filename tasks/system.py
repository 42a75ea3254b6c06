"""System tasks: prove that the queue, the worker, the database and the
channel layer work together."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.layers import get_channel_layer

from callcenter.calls import selectors


@shared_task(name="system.ping", bind=True, soft_time_limit=10, time_limit=20)
def ping(self, *, reply_channel: str | None = None) -> dict[str, object]:
    """Answer with the worker's name and the number of customers in its
    database; if ``reply_channel`` is given, also send ``system.pong`` there
    through the channel layer."""
    result = {"worker": self.request.hostname, "customers": selectors.customer_count()}
    if reply_channel:
        async_to_sync(get_channel_layer().send)(reply_channel, {"type": "system.pong", **result})
    return result
