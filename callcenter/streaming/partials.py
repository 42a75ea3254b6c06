"""Partial hypotheses while the caller speaks, computed in the web process.

The partials' recognizer (``ASR_PARTIAL_BACKBONE``, ``asr.partial_recognizer``)
runs on **one** thread beside the event loop (never on it), shared by all
calls of the process. Each call keeps its own explicit stream state
(``rec.stream()``) for the segment in progress and feeds it only the audio
it has not seen. Whisper (the default) re-decodes the growing segment and
commits the words two consecutive decodes agree on (local agreement); the
small streaming model carries its state forward, so its partial costs only
the new audio.

Concurrent calls are computed together: the requests that arrive while the
thread is busy wait, and the thread takes all of them (at most ``max_batch``)
as one ``rec.accept_batch`` (Whisper: each segment encoded in its own window,
then one greedy decoding batch), so ten calls cost much less than ten
partials one by one.

Back-pressure drops, it never queues without bound: a call asks for a
partial at most every ``interval`` seconds; the request is dropped when that
call's previous partial is still being computed, when ``max_in_flight``
requests of all calls are already waiting or running, or when the thread was
busy more than ``max_busy`` of the last two seconds (partials never take more
than that share of a core). The thread runs at a lower CPU priority (``nice``,
that thread alone: ``STREAM_PARTIAL_NICE``), so the event loop and the
workers' finals get the cores first and the partials the rest. The audio is
not lost: the next partial of that call feeds it. Finals do not depend on
partials at all (they are recognized from the stored segment by the Celery
worker).

A batch that fails costs every call in it that partial: each such call starts
its segment's stream again at its next partial (fed the whole segment), and
for ``SOLO_S`` seconds the thread takes one request at a time, so a request
that keeps failing fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from callcenter.ops import metrics
from callcenter.asr import PartialStream, SpeechRecognizer, Transcript, partial_recognizer

logger = logging.getLogger(__name__)

# Less new audio than this is not worth a partial.
MIN_NEW_AUDIO_S = 0.1
BUSY_WINDOW_S = 2.0
SOLO_S = 10.0


@dataclass
class PartialRequest:
    """One call's partial: its stream (opened on the partials thread at the segment's first
    partial: ``open_stream(rec)``) and the audio it has not seen."""

    open_stream: Callable[[SpeechRecognizer], PartialStream]
    audio: np.ndarray
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class PartialEngine:
    """One thread running the partials' recognizer for every call of the process, in batches."""

    def __init__(
        self,
        *,
        loader: Callable[[], SpeechRecognizer],
        max_batch: int = 16,
        max_in_flight: int = 64,
        max_busy: float = 1.0,
        nice: int = 0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or not 0 < max_busy <= 1:
            raise ValueError("max_batch and max_in_flight must be >= 1, max_busy in (0, 1]")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0-19, got {nice}")
        self._loader = loader
        self.nice = nice
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="partials", initializer=self._lower_priority
        )
        self._lock = threading.Lock()
        self._pending: list[PartialRequest] = []
        self._in_flight = 0
        self._runs: deque[tuple[float, float]] = deque()  # (started, ended) of recent batches, monotonic
        self._solo_until = -math.inf
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.max_busy = max_busy
        self.batches: deque[int] = deque(maxlen=256)  # sizes of the latest batches (tests, benches)
        # Load the model now, on the partials thread, not at the first partial (Whisper takes
        # seconds to load: the first segment of the first call would get none).
        self._executor.submit(self._warm)

    def _lower_priority(self) -> None:
        """Partials thread, at its start: lower this thread's CPU priority alone (Linux
        threads have their own nice value), so that the finals and the event loop win the
        cores whenever they want them. Elsewhere a thread has no nice value of its own: the
        thread runs at the process's priority."""
        if self.nice and not sys.platform.startswith("linux"):
            logger.warning("partials: nice %d not applied: only Linux gives a thread its own priority", self.nice)
        elif self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError as exc:  # a failed initializer would break the executor: run at the process's priority
                logger.warning("partials: could not lower the thread's CPU priority to nice %d: %s", self.nice, exc)

    def _warm(self) -> None:
        try:
            self._loader()
        except Exception:  # noqa: BLE001 - the first partial reports it again
            logger.exception("partials: the recognizer could not be loaded")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_submit(
        self, open_stream: Callable[[SpeechRecognizer], PartialStream], audio: np.ndarray
    ) -> asyncio.Future[tuple[Transcript, float]] | None:
        """Queue a call's partial for the next batch; None (dropped) when the engine is full.
        The result: (the partial, seconds its batch took)."""
        request = PartialRequest(open_stream, audio)
        with self._lock:
            if self._in_flight >= self.max_in_flight or self._busy_fraction() >= self.max_busy:
                return None
            self._in_flight += 1
            self._pending.append(request)
        self._executor.submit(self._drain)
        return asyncio.wrap_future(request.future)

    def _busy_fraction(self) -> float:
        """Share of the last BUSY_WINDOW_S the thread spent on partials (lock held)."""
        since = time.monotonic() - BUSY_WINDOW_S
        while self._runs and self._runs[0][1] < since:
            self._runs.popleft()
        return sum(end - max(start, since) for start, end in self._runs) / BUSY_WINDOW_S

    def _drain(self) -> None:
        """Partials thread: compute every waiting request (at most max_batch) as one batch."""
        with self._lock:
            take = 1 if time.monotonic() < self._solo_until else self.max_batch
            batch, self._pending = self._pending[:take], self._pending[take:]
        if not batch:
            return  # an earlier drain took them
        try:
            rec = self._loader()  # loading the model (once) does not count as busy
        except Exception as exc:  # noqa: BLE001 - each request reports it
            self._finish(batch, [exc] * len(batch), 0.0)
            return
        started, cpu_started = time.monotonic(), time.thread_time()
        results: list[object] = []
        streams: list[PartialStream] = []
        ready: list[int] = []
        for i, request in enumerate(batch):
            try:
                streams.append(request.open_stream(rec))
                ready.append(i)
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - this request's own failure
                results.append(exc)
        try:
            with torch.inference_mode():
                chunks = [torch.from_numpy(np.ascontiguousarray(batch[i].audio)) for i in ready]
                for i, transcript in zip(ready, rec.accept_batch(streams, chunks)):
                    results[i] = transcript
        except Exception as exc:  # noqa: BLE001 - the whole batch's partial is lost, never the call
            logger.exception("partials: a batch of %d failed; one request at a time for %.0f s", len(ready), SOLO_S)
            for i in ready:
                results[i] = BatchFailed(str(exc) or type(exc).__name__)
            with self._lock:
                self._solo_until = time.monotonic() + SOLO_S
        ended = time.monotonic()
        with self._lock:
            self._runs.append((started, ended))
        self.batches.append(len(batch))
        metrics.PARTIAL_BATCH_SIZE.observe(len(batch))
        # wall time beyond the thread's CPU time: waiting for a core (its low priority) or the GIL
        metrics.PARTIAL_THREAD_SECONDS.labels("wall").inc(ended - started)
        metrics.PARTIAL_THREAD_SECONDS.labels("cpu").inc(time.thread_time() - cpu_started)
        self._finish(batch, results, ended - started)

    def _finish(self, batch: list[PartialRequest], results: list[object], seconds: float) -> None:
        with self._lock:
            self._in_flight -= len(batch)
        for request, result in zip(batch, results):
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result((result, seconds))


class BatchFailed(RuntimeError):
    """The batch this partial was in failed: the call's stream must start again."""


_engine: PartialEngine | None = None
_engine_lock = threading.Lock()


def engine() -> PartialEngine:
    """The process's partial engine (``ASR_PARTIAL_BACKBONE``, loaded on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from django.conf import settings

            _engine = PartialEngine(
                loader=partial_recognizer,
                max_batch=settings.STREAM_PARTIAL_BATCH_MAX,
                max_busy=settings.STREAM_PARTIAL_MAX_BUSY_PERCENT / 100,
                nice=settings.STREAM_PARTIAL_NICE,
            )
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

    def restart(self, serial: int | None) -> None:
        """The segment's stream failed (its batch did): the next partial opens a new stream and
        feeds it the whole segment so far."""
        if serial == self.serial:
            self._box = [None]
            self._fed = 0

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

        def open_stream(rec: SpeechRecognizer) -> PartialStream:
            if box[0] is None:
                box[0] = rec.stream(sample_rate=sample_rate, params=self._caller_params(rec))
            return box[0]

        job = self.engine.try_submit(open_stream, audio)
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
