"""Load limits of the media sockets, per web process.

- **Admission** (at connect, after the line token): at most
  ``STREAM_MAX_STREAMS`` media streams in this process, and none while more
  than ``STREAM_MAX_QUEUE_DEPTH`` tasks wait in the recognition queue (the
  adaptation queue's backlog does not count); a stream refused here is
  closed with 4503 (the websocket form of HTTP 503, as sherpa-onnx answers
  at capacity) before anything is stored. Streams already admitted are not
  affected.
- **Per stream**: ``STREAM_MAX_SPEED`` times real time, sustained (a token
  bucket over the bytes on the wire, refilled at that many times the
  protocol's real-time byte rate, with two seconds of burst). A frame over
  the rate is held back until it fits: a client that waits for each answer
  (vosk-server's) is simply paced; one that keeps sending regardless and
  gets more than ``MAX_AHEAD_S`` seconds of pacing ahead is closed with
  4429. ``STREAM_IDLE_TIMEOUT_S`` without a frame and ``STREAM_MAX_CALL_S``
  of call close with 4408. A call closed by a limit keeps every segment it
  has.

Everything here is plain Python apart from the queue-depth probe, which asks
Redis (off the event loop) at most once a second per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from callcenter.streaming.protocols import ProtocolError

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 4408  # also the start timeout's code
CLOSE_RATE_LIMITED = 4429
CLOSE_BUSY = 4503

BURST_S = 2.0
# Seconds of pacing a client may have queued before it is cut (4429): at 4x
# real time, a minute of audio sent ahead of its pace.
MAX_AHEAD_S = 15.0
# What the speed limit charges a frame of fewer bytes (10 ms of 8 kHz PCM): a client's frames are
# 20 ms or more of audio, and each frame, even an empty one, costs an answer.
MIN_FRAME_CHARGE = 160
QUEUE_DEPTH_CACHE_S = 1.0
# Bytes per second of real-time audio on the wire. PCM16: 2 bytes a sample.
# Twilio: 8 kHz mu-law in 20 ms JSON frames of about 400 bytes (base64
# payload, 160 -> 216 bytes, and the JSON around it): about 20 kB/s.
TWILIO_REALTIME_BYTES_PER_S = 20_000


def realtime_bytes_per_s(*, protocol: str, sample_rate: int, channels: int = 1) -> int:
    """Wire bytes a second of one stream of audio sent in real time
    (``channels``: Twilio tracks, or interleaved PCM channels)."""
    return channels * (TWILIO_REALTIME_BYTES_PER_S if protocol == "twilio" else 2 * sample_rate)


@dataclass(frozen=True)
class Limits:
    max_streams: int = 50
    max_queue_depth: int = 500  # 0: not checked
    max_call_s: float = 4 * 3600
    max_speed: float = 4.0  # times real time, sustained
    idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {self.max_streams}")
        if self.max_queue_depth < 0:
            raise ValueError(f"max_queue_depth must be >= 0, got {self.max_queue_depth}")
        if self.max_call_s <= 0 or self.idle_timeout_s <= 0 or self.max_speed <= 0:
            raise ValueError("max_call_s, idle_timeout_s and max_speed must be positive")

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_streams=settings.STREAM_MAX_STREAMS,
            max_queue_depth=settings.STREAM_MAX_QUEUE_DEPTH,
            max_call_s=settings.STREAM_MAX_CALL_S,
            max_speed=settings.STREAM_MAX_SPEED,
            idle_timeout_s=settings.STREAM_IDLE_TIMEOUT_S,
        )


class StreamSlots:
    """How many media streams this process holds; taken at admission,
    given back when the socket closes."""

    def __init__(self) -> None:
        self.active = 0

    def acquire(self, limit: int) -> bool:
        if self.active >= limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active <= 0:
            raise RuntimeError("a stream slot was released twice")
        self.active -= 1


SLOTS = StreamSlots()


class ByteBudget:
    """Token bucket: ``rate`` bytes a second, ``BURST_S`` seconds of it
    available at once. Bytes taken over the budget are owed: ``take`` says
    how long to wait before they fit the rate."""

    def __init__(self, rate: float, *, now: float, burst_s: float = BURST_S) -> None:
        self.burst_s = burst_s
        self.rate = float(rate)
        self.tokens = self.capacity
        self.at = now

    @property
    def capacity(self) -> float:
        return self.rate * self.burst_s

    def set_rate(self, rate: float, *, now: float) -> None:
        """Change the rate (once the stream's format is known), keeping what is owed."""
        self._refill(now)
        self.rate = float(rate)
        self.tokens = min(self.tokens, self.capacity)

    def take(self, size: int, *, now: float) -> float:
        """Take ``size`` bytes; the seconds until they fit the rate (0: now)."""
        self._refill(now)
        self.tokens -= size
        return max(0.0, -self.tokens / self.rate)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now


class QueueDepth:
    """Recognition tasks waiting in the broker, asked of Redis at most once
    a second; None when Redis cannot be asked (then nothing is refused: the
    segments are stored either way and the sweeper queues them later)."""

    def __init__(self, queue: str | None = None) -> None:
        self.queue = queue  # None: the recognition queue (not the adaptation backlog)
        self._value: int | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> int | None:
        async with self._lock:
            if time.monotonic() - self._at >= QUEUE_DEPTH_CACHE_S:
                from callcenter.ops import redisconn

                try:
                    self._value = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: redisconn.queue_depth(queue=self.queue)
                    )
                except Exception as exc:  # noqa: BLE001 - any Redis failure: unknown depth
                    logger.warning("queue depth unknown (Redis: %s); streams are admitted", exc)
                    self._value = None
                self._at = time.monotonic()
            return self._value


QUEUE = QueueDepth()


async def admit(limits: Limits) -> None:
    """Take a stream slot or raise ``ProtocolError`` (4503); the caller
    gives the slot back with ``SLOTS.release()`` when the socket closes."""
    from callcenter.ops import metrics

    if limits.max_queue_depth:
        depth = await QUEUE.current()
        if depth is not None and depth > limits.max_queue_depth:
            metrics.STREAMS_REFUSED.labels("queue_depth").inc()
            raise ProtocolError(
                "queue_full", f"{depth} segments wait for recognition (limit {limits.max_queue_depth}); try again later",
                CLOSE_BUSY,
            )  # fmt: skip
    if not SLOTS.acquire(limits.max_streams):
        metrics.STREAMS_REFUSED.labels("streams").inc()
        raise ProtocolError(
            "server_busy", f"this server has {limits.max_streams} streams already; try again later", CLOSE_BUSY
        )


def rate_exceeded(limits: Limits) -> ProtocolError:
    return ProtocolError(
        "rate_limited",
        f"the stream runs more than {MAX_AHEAD_S:g} s ahead of {limits.max_speed:g}x real time",
        CLOSE_RATE_LIMITED,
    )
