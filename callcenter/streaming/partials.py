"""Partial hypotheses while the caller speaks, computed in the web process.

The partials' recognizer (``ASR_PARTIAL_BACKBONE``, ``asr.partial_recognizer``)
runs on **one** thread beside the event loop (never on it), shared by all
calls of the process. Each call keeps its own explicit stream state
(``rec.stream()``) for the segment in progress and feeds it only the audio
it has not seen. Whisper (the default) re-decodes the growing segment and
commits the words two consecutive decodes agree on (local agreement); the
small streaming model carries its state forward, so its partial costs only
the new audio.

Back-pressure drops, it never queues: a call asks for a partial at most
every ``interval`` seconds; the request is dropped when that call's previous
partial is still being computed, when ``max_in_flight`` partials of all
calls are already queued or running, or when the thread was busy more than
``max_busy`` of the last two seconds (partials never take more than that
share of a core from the finals and the event loop). The audio is not lost:
the next partial of that call feeds it. Finals do not depend on partials at all (they are
recognized from the stored segment by the Celery worker).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from callcenter.ops import metrics
from callcenter.asr import PartialStream, SpeechRecognizer, Transcript, partial_recognizer

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Less new audio than this is not worth a partial.
MIN_NEW_AUDIO_S = 0.1
BUSY_WINDOW_S = 2.0


class PartialEngine:
    """One thread running the streaming model for every call of the process."""

    def __init__(self, *, loader: Callable[[], SpeechRecognizer], max_in_flight: int = 2, max_busy: float = 0.5) -> None:
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partials")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._runs: deque[tuple[float, float]] = deque()  # (started, ended) of recent jobs, monotonic
        self.max_in_flight = max_in_flight
        self.max_busy = max_busy
        # Load the model now, on the partials thread, not at the first partial (Whisper takes
        # seconds to load: the first segment of the first call would get none).
        self._executor.submit(self._warm)

    def _warm(self) -> None:
        try:
            self._loader()
        except Exception:  # noqa: BLE001 - the first partial reports it again
            logger.exception("partials: the recognizer could not be loaded")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_submit(self, fn: Callable[[SpeechRecognizer], T]) -> asyncio.Future[T] | None:
        """Run ``fn(recognizer)`` on the partials thread; None (dropped) when
        the engine is already full."""
        with self._lock:
            if self._in_flight >= self.max_in_flight or self._busy_fraction() >= self.max_busy:
                return None
            self._in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn)
        future.add_done_callback(self._release)
        return future

    def _busy_fraction(self) -> float:
        """Share of the last BUSY_WINDOW_S the thread spent on partials (lock held)."""
        since = time.monotonic() - BUSY_WINDOW_S
        while self._runs and self._runs[0][1] < since:
            self._runs.popleft()
        return sum(end - max(start, since) for start, end in self._runs) / BUSY_WINDOW_S

    def _run(self, fn: Callable[[SpeechRecognizer], T]) -> T:
        rec = self._loader()  # loading the model (once) does not count as busy
        started = time.monotonic()
        try:
            return fn(rec)
        finally:
            with self._lock:
                self._runs.append((started, time.monotonic()))

    def _release(self, _future: object) -> None:
        with self._lock:
            self._in_flight -= 1


_engine: PartialEngine | None = None
_engine_lock = threading.Lock()


def engine() -> PartialEngine:
    """The process's partial engine (``ASR_PARTIAL_BACKBONE``, loaded on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = PartialEngine(loader=partial_recognizer)
        return _engine


class CallPartials:
    """The partial-hypothesis state of one call: which segment, how much of
    its audio the model has seen, and the job in flight."""

    def __init__(self, engine: PartialEngine, *, sample_rate: int, interval_s: float) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.interval_s = interval_s
        # The caller (set when the call is opened): partials use their voice
        # profile for the streaming model, looked up once per call on the
        # partials thread at the first partial.
        self.customer_id: int | None = None
        self.profile_id: int | None = None
        self._profile: tuple[int | None, dict | None] | None = None
        self.serial: int | None = None
        self._box: list[PartialStream | None] = [None]
        self._fed = 0
        self._job: asyncio.Future | None = None
        self._last = -math.inf

    def reset(self, serial: int | None) -> None:
        """A new segment (or none): a job still running for the old one is stale."""
        self.serial = serial
        self._box = [None]
        self._fed = 0
        self._last = -math.inf

    def request(
        self, *, segment_audio: Callable[[int], np.ndarray], now: float
    ) -> asyncio.Future[tuple[Transcript, float]] | None:
        """Start a partial for the segment in progress if one is due; returns
        the job, or None if none was due or it was dropped."""
        if self.serial is None or now - self._last < self.interval_s:
            return None
        if self._job is not None and not self._job.done():
            # Behind: skip this one (the next request is an interval later).
            self._last = now
            metrics.PARTIALS.labels("dropped").inc()
            return None
        audio = segment_audio(self._fed)
        if audio.size < MIN_NEW_AUDIO_S * self.sample_rate:
            return None
        box, sample_rate = self._box, self.sample_rate

        def step(rec: SpeechRecognizer) -> tuple[Transcript, float]:
            started = time.perf_counter()
            if box[0] is None:
                box[0] = rec.stream(sample_rate=sample_rate, params=self._caller_params(rec))
            with torch.inference_mode():
                transcript = box[0].accept(torch.from_numpy(np.ascontiguousarray(audio)))
            return transcript, time.perf_counter() - started

        job = self.engine.try_submit(step)
        if job is None:
            self._last = now
            metrics.PARTIALS.labels("dropped").inc()
            return None
        self._fed += audio.size
        self._last = now
        self._job = job
        return job

    def _caller_params(self, rec: SpeechRecognizer) -> dict | None:
        """The caller's adapted parameters for the streaming model (partials
        thread; once per call). A database error leaves this call's partials
        on the base model until the next segment tries again."""
        from django.db import DatabaseError, close_old_connections

        from callcenter import asr

        if self._profile is None:
            try:
                close_old_connections()  # this thread's connection may have been dropped since
                self._profile = asr.caller_params(rec, self.customer_id)
            except DatabaseError as exc:
                logger.warning("partials: the caller's voice profile could not be read, using the base model: %s", exc)
                return None
            self.profile_id = self._profile[0]
        return self._profile[1]
