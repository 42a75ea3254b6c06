"""The channel layer every process uses (``settings.CHANNEL_LAYERS``):
channels-redis' ``RedisChannelLayer``, with its blocking pop made to honour
a cancellation.

Why: on Python 3.11, ``asyncio.wait_for`` returns its result and drops the
caller's cancellation when the awaited work finishes in the same loop turn
as the cancel (fixed in 3.12, whose ``wait_for`` is ``asyncio.timeout``).
redis-py sends every command through ``wait_for``, so a consumer whose
websocket closed while its channel-layer receive was sending a command went
on receiving: channels-redis loops on an empty pop until a message comes,
a cancelled task never ends, and the socket's consumer stayed alive for
ever, popping from Redis every few seconds. ``_brpop_with_clean`` below
checks, after its cleanup command and after an empty pop, whether its task
was asked to stop, and raises ``CancelledError`` where the cancellation was
lost (so a receive ends within one pop, 5 s at most). What it does is
otherwise channels-redis 4.3.0's (pinned). Its steps are written out here,
not called through ``super()``: a cancellation dropped in the cleanup
command would otherwise keep the consumer for a whole 5 s pop (measured:
1000 abandoned feeds 18-24 s against about 10 s).
"""

from __future__ import annotations

import asyncio

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer


def raise_if_cancel_was_dropped() -> None:
    """Raise ``CancelledError`` if this task was asked to stop but no
    ``CancelledError`` reached it (``Task.cancelling()`` counts the requests
    not yet taken back)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("cancelled (a cancellation asyncio.wait_for dropped)")


class RedisChannelLayer(_RedisChannelLayer):
    async def _brpop_with_clean(self, index, channel, timeout):
        """One blocking pop from ``channel`` (``None`` when it timed out),
        keeping the popped message in the backup queue until it is handled:
        channels-redis' steps, with a check for a dropped cancellation before
        the blocking pop and after an empty one."""
        cleanup_script = """
            local backed_up = redis.call('ZRANGE', ARGV[2], 0, -1, 'WITHSCORES')
            for i = #backed_up, 1, -2 do
                redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])
            end
            redis.call('DEL', ARGV[2])
        """
        backup_queue = self._backup_channel_name(channel)
        connection = self.connection(index)
        await connection.eval(cleanup_script, 0, channel, backup_queue)
        raise_if_cancel_was_dropped()
        result = await connection.bzpopmin(channel, timeout=timeout)
        if result is None:
            raise_if_cancel_was_dropped()
            return None
        _, member, timestamp = result
        # A message popped is kept (in the backup queue, then returned) even
        # when the task is stopping: the caller decides what to do with it.
        await connection.zadd(backup_queue, {member: float(timestamp)})
        return member
