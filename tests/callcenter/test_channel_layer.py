"""The channel layer (``callcenter.live.layer``) over the real Redis: a
receive whose task was asked to stop ends, even where Python 3.11's
``asyncio.wait_for`` dropped the cancellation, and the agents' feed a client
abandons leaves no consumer running (the CI hang of 2026-12-07: a refused
feed's receive kept popping from Redis and its test's event loop never
closed)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connections

from callcenter.live.layer import RedisChannelLayer
from tests.callcenter.dashboard.test_consumers import _close_code, _connect, cookie, people  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_settings_layer_is_the_one_that_honours_cancellation():
    assert type(get_channel_layer()) is RedisChannelLayer


def test_a_receive_whose_cancellation_was_dropped_still_ends_and_a_message_sent_after_waits_for_the_next():
    layer = get_channel_layer()

    async def receive_after_a_dropped_cancel(channel):
        task = asyncio.current_task()
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # what asyncio.wait_for does on 3.11 when its work finished in the cancel's turn
        assert task.cancelling() == 1
        return await layer.receive(channel)

    async def scenario():
        channel = await layer.new_channel()
        receiving = asyncio.ensure_future(receive_after_a_dropped_cancel(channel))
        done, _ = await asyncio.wait({receiving}, timeout=8)  # a pop blocks 5 s at most
        ended = receiving in done
        if not ended:
            receiving.cancel()
            await asyncio.wait({receiving}, timeout=8)
        cancelled = receiving.cancelled()
        # The layer still works for the channel's next receive.
        await layer.send(channel, {"type": "hello"})
        message = await asyncio.wait_for(layer.receive(channel), timeout=8)
        return ended, cancelled, message

    ended, cancelled, message = async_to_sync(scenario)()

    assert ended, "the receive went on after its task was asked to stop"
    assert cancelled
    assert message == {"type": "hello"}


def test_agent_feeds_refused_and_abandoned_a_thousand_times_each_close_their_event_loop(people):  # noqa: F811
    """A client gone without a close frame: the loop's end cancels the
    consumer, whose receive must end (before, one in a few hundred hung)."""
    headers = cookie(people["alice"].user)
    loops: list[asyncio.AbstractEventLoop] = []

    async def scenario():
        loops[:] = [asyncio.get_running_loop()]
        feed, first = await _connect(headers, "/ws/agent/?call=abc")
        assert first["code"] == "invalid"
        assert await _close_code(feed) == 4400

    def run_all(outcome: list) -> None:
        try:
            for _ in range(1000):
                if stop.is_set():
                    return
                async_to_sync(scenario)()
                outcome[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome.append(exc)
        finally:
            connections.close_all()  # this thread's own database connection

    outcome: list = [0]
    stop = threading.Event()
    runner = threading.Thread(target=run_all, args=(outcome,), daemon=True)
    runner.start()
    runner.join(timeout=75)  # about 10 s on 2 cores
    hung = runner.is_alive()
    if hung:  # stop it and cancel its tasks once more: the test fails, the process still ends
        stop.set()
        loop = loops[0]
        loop.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
        runner.join(timeout=20)

    assert not hung, f"an event loop never closed after {outcome[0]} feeds"
    assert outcome == [1000]
