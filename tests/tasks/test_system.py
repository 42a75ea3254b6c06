"""system.ping through real Redis to a real worker process."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from callcenter.calls import services
from tasks.system import ping

pytestmark = pytest.mark.django_db(transaction=True)


def test_ping_round_trip_counts_customers_committed_by_the_test(celery_worker):
    services.customer_create(phone="+15551230001", name="Ada")
    services.customer_create(phone="+15551230002")

    answer = ping.delay().get(timeout=30)

    assert answer == {"worker": celery_worker.nodename, "customers": 2}


def test_ping_sends_pong_through_the_channel_layer_to_the_reply_channel(celery_worker):
    async def round_trip() -> dict:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await sync_to_async(ping.delay)(reply_channel=channel)
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout=30)
        finally:
            await layer.close_pools()

    message = async_to_sync(round_trip)()

    assert message == {"type": "system.pong", "worker": celery_worker.nodename, "customers": 0}
