"""The few things the backend asks Redis directly (besides Celery and the
channel layer, which keep their own connections): the depth of the
recognition queue, worker heartbeats, live-call liveness keys and login
attempt counters. One synchronous client per process; short timeouts, so a
Redis outage is an error in a second, not a hang.
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

from callcenter.celery import RECOGNITION_QUEUE

PREFIX = "callcenter:"
WORKER_KEY = PREFIX + "worker:"  # + hostname -> model name; expires
CALL_ALIVE_KEY = PREFIX + "call-alive:"  # + call id -> web process; expires
TIMEOUT_S = 1.0
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's: queue "recognition" at priority 3 is "recognition\x06\x163"

_lock = threading.Lock()
_client: tuple[tuple[int, str], redis.Redis] | None = None


def client() -> redis.Redis:
    """This process's client (a new one after a fork)."""
    global _client
    key = (os.getpid(), settings.REDIS_URL)
    with _lock:
        if _client is None or _client[0] != key:
            _client = (
                key,
                redis.Redis.from_url(
                    settings.REDIS_URL, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, decode_responses=True
                ),
            )
        return _client[1]


def queue_name() -> str:
    """The recognition queue (Celery's default queue)."""
    return RECOGNITION_QUEUE


def queue_depth(*, queue: str | None = None) -> int:
    """Tasks waiting in a Celery queue (default: the recognition queue; the
    adaptation backlog is not in it), all priorities."""
    name = queue or queue_name()
    pipe = client().pipeline(transaction=False)
    pipe.llen(name)
    for priority in (3, 6, 9):
        pipe.llen(f"{name}{PRIORITY_SEPARATOR}{priority}")
    return sum(pipe.execute())


def worker_heartbeat(*, hostname: str, model: str, ttl_s: int) -> None:
    client().set(WORKER_KEY + hostname, model, ex=ttl_s)


def workers_ready() -> dict[str, str]:
    """Workers whose heartbeat has not expired: hostname -> loaded model."""
    r = client()
    keys = list(r.scan_iter(match=WORKER_KEY + "*", count=100))
    values = r.mget(keys) if keys else []
    return {key.removeprefix(WORKER_KEY): value for key, value in zip(keys, values, strict=True) if value}


def calls_alive_renew(*, call_ids: list[int], owner: str, ttl_s: int) -> None:
    pipe = client().pipeline(transaction=False)
    for call_id in call_ids:
        pipe.set(f"{CALL_ALIVE_KEY}{call_id}", owner, ex=ttl_s)
    pipe.execute()


def call_alive_forget(*, call_id: int) -> None:
    client().delete(f"{CALL_ALIVE_KEY}{call_id}")


def calls_alive(*, call_ids: list[int]) -> set[int]:
    """Which of these calls a web process still holds."""
    if not call_ids:
        return set()
    values = client().mget([f"{CALL_ALIVE_KEY}{call_id}" for call_id in call_ids])
    return {call_id for call_id, value in zip(call_ids, values, strict=True) if value}


def uptime_s() -> int:
    """Seconds since the Redis server started (a restart loses every key)."""
    return int(client().info("server")["uptime_in_seconds"])


def count_attempt(*, key: str, window_s: int) -> int:
    """Increment the fixed-window counter ``key``; its value after the increment."""
    pipe = client().pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, window_s, nx=True)
    return int(pipe.execute()[0])
