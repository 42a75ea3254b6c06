"""The web process's partial engine with the product's real partials recognizer (Whisper tiny, as
``ASR_PARTIAL_BACKBONE`` loads it): concurrent calls' partials are computed in batches, each
call's partial is what its stream gives alone, and a failure costs only that partial."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest
import torch

from asr_core import defaults
from asr_core.audio import load_audio
from asr_core.manifest import read_manifest
from asr_core.metrics import wer
from callcenter import asr
from callcenter.streaming.partials import BatchFailed, CallPartials, PartialEngine

pytestmark = pytest.mark.timeout(300)


def whisper_partials():
    """The product's default partials recognizer (the shared test stack's settings say `small`)."""
    return asr.backbone_recognizer(backbone=defaults.PARTIAL_BACKBONE, partials=True)


@pytest.fixture(scope="module")
def prompts(real_dev):
    rows = sorted(read_manifest(str(real_dev), ("test",)), key=lambda u: len(u.text))[10:16]
    return [load_audio(u.audio, 8000).numpy() for u in rows]


def _gated() -> tuple[threading.Event, object]:
    """A loader of the real partials recognizer that holds the engine's thread (its warm-up) until
    the gate opens: what is submitted before then waits and goes as one batch."""
    gate = threading.Event()

    def loader():
        gate.wait(60)
        return whisper_partials()

    return gate, loader


def _opener(rec_streams: dict, key: int):
    def open_stream(rec):
        if key not in rec_streams:
            rec_streams[key] = rec.stream(sample_rate=8000, params=None)
        return rec_streams[key]

    return open_stream


async def _speak(engine: PartialEngine, prompts: list[np.ndarray], gate: threading.Event,
                 chunk: int = 4000) -> list[str]:
    """Every prompt as a call: each step submits every call's next chunk at once, then waits."""
    streams: dict = {}
    last = [""] * len(prompts)
    for start in range(0, max(p.size for p in prompts), chunk):
        live = [k for k, p in enumerate(prompts) if start < p.size]
        jobs = [engine.try_submit(_opener(streams, k), prompts[k][start:start + chunk]) for k in live]
        assert all(job is not None for job in jobs)
        gate.set()
        for k, (transcript, seconds) in zip(live, await asyncio.gather(*jobs)):
            assert seconds >= 0
            last[k] = transcript.text
    return last


def test_concurrent_calls_partials_are_computed_in_batches_as_each_alone(prompts):
    gate, loader = _gated()
    engine = PartialEngine(loader=loader, max_busy=1.0)
    rec = whisper_partials()
    alone = []
    for audio in prompts:
        stream = rec.stream(sample_rate=8000, params=None)
        for start in range(0, audio.size, 4000):
            text = stream.accept(torch.from_numpy(audio[start:start + 4000])).text
        alone.append(text)
    together = asyncio.run(_speak(engine, prompts, gate))
    assert all(together), together
    assert max(engine.batches) == len(prompts), list(engine.batches)   # every call in one batch
    assert wer(list(zip(alone, together))) <= 0.1, (alone, together)
    assert engine.in_flight == 0


def test_a_call_whose_stream_cannot_open_fails_alone(prompts):
    engine = PartialEngine(loader=whisper_partials, max_busy=1.0)

    def broken(rec):
        raise RuntimeError("no stream for this call")

    async def run():
        good = engine.try_submit(_opener({}, 0), prompts[0][:8000])
        bad = engine.try_submit(broken, prompts[1][:8000])
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(run())
    assert isinstance(bad, RuntimeError) and "no stream" in str(bad)
    assert good[0].text
    assert engine.in_flight == 0


def test_a_failed_batch_costs_its_calls_one_partial_and_then_runs_alone(prompts):
    """Audio that is not (samples,) fails the batch it is in; every call in it gets BatchFailed,
    and for a while each request runs alone, so the bad one keeps failing by itself while the
    others' partials come back."""
    gate, loader = _gated()
    engine = PartialEngine(loader=loader, max_busy=1.0)
    bad_audio = np.zeros((2, 2, 2), dtype=np.float32)

    async def burst():
        jobs = [engine.try_submit(_opener({}, 0), prompts[0][:8000]),
                engine.try_submit(_opener({}, 1), bad_audio)]
        gate.set()
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, BatchFailed) for r in results), results
    assert 2 in engine.batches

    async def again():
        jobs = [engine.try_submit(_opener({}, 0), prompts[0][:8000]),
                engine.try_submit(_opener({}, 1), bad_audio)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    good, bad = asyncio.run(again())
    assert isinstance(bad, BatchFailed)
    assert good[0].text, good
    assert list(engine.batches)[-2:] == [1, 1]
    assert engine.in_flight == 0


def test_requests_beyond_the_limit_are_dropped(prompts):
    engine = PartialEngine(loader=whisper_partials, max_in_flight=2, max_busy=1.0)

    async def run():
        jobs = [engine.try_submit(_opener({}, k), prompts[k][:8000]) for k in range(3)]
        assert jobs[2] is None          # dropped, never queued
        return await asyncio.gather(*jobs[:2])

    assert all(t.text for t, _ in asyncio.run(run()))
    with pytest.raises(ValueError):
        PartialEngine(loader=whisper_partials, max_busy=0)


def test_a_call_whose_batch_failed_feeds_its_whole_segment_again():
    partials = CallPartials(PartialEngine(loader=whisper_partials), sample_rate=8000, interval_s=0.5)
    partials.reset(3)
    partials._fed = 12000
    partials.restart(2)            # another segment's failure changes nothing
    assert partials._fed == 12000
    partials.restart(3)
    assert partials._fed == 0 and partials._box == [None]



def test_a_thread_busy_beyond_its_share_drops_requests(prompts):
    """max_busy: the share of the last two seconds the thread may spend on partials; beyond it a
    request is dropped (the call asks again an interval later), never queued."""
    engine = PartialEngine(loader=whisper_partials, max_busy=0.01)

    async def run():
        transcript, took = await engine.try_submit(_opener({}, 0), prompts[0][:16000])
        assert transcript.text and took >= 0.02
        return engine.try_submit(_opener({}, 1), prompts[1][:8000])

    assert asyncio.run(run()) is None
    assert engine.in_flight == 0


def priority() -> int:
    """The calling thread's own nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_partials_thread_alone_runs_at_the_lower_priority(prompts):
    """With `nice`, the partials thread (and no other thread of the process) yields the CPU to the
    finals and the event loop; its partials are the same."""

    mine = priority()
    engine = PartialEngine(loader=whisper_partials, max_busy=1.0, nice=19)
    plain = PartialEngine(loader=whisper_partials, max_busy=1.0)
    assert engine._executor.submit(priority).result(timeout=120) == max(mine, 19)
    assert plain._executor.submit(priority).result(timeout=120) == mine
    assert priority() == mine
    texts = [asyncio.run(_speak(e, prompts[:2], threading.Event())) for e in (engine, plain)]
    assert texts[0] == texts[1] and all(texts[0])
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="nice must be 0-19"):
            PartialEngine(loader=whisper_partials, nice=bad)


def test_the_partials_thread_counts_its_wall_and_cpu_seconds(prompts):
    """/metrics: the time the thread spent in batches and its own CPU time in them (the difference
    is waiting for a core or the GIL; bench/live_calls.py prints both)."""
    from callcenter.ops import metrics

    def read() -> dict[str, float]:
        return {c: metrics.PARTIAL_THREAD_SECONDS.labels(c)._value.get() for c in ("wall", "cpu")}

    before = read()
    engine = PartialEngine(loader=whisper_partials, max_busy=1.0)
    assert all(asyncio.run(_speak(engine, prompts[:2], threading.Event())))
    after = read()
    wall, cpu = after["wall"] - before["wall"], after["cpu"] - before["cpu"]
    assert 0 < cpu <= wall + 0.01


def test_where_a_thread_has_no_nice_value_of_its_own_the_partials_still_run(prompts, monkeypatch, caplog):
    """Only Linux gives a thread its own priority: elsewhere the setting is reported and not applied
    (never to the whole process), and the partials thread works as at nice 0."""
    from callcenter.streaming import partials as module

    mine = priority()
    monkeypatch.setattr(module.sys, "platform", "darwin")
    engine = PartialEngine(loader=whisper_partials, max_busy=1.0, nice=19)
    assert engine._executor.submit(priority).result(timeout=120) == mine
    assert "nice 19 not applied" in caplog.text
    assert all(asyncio.run(_speak(engine, prompts[:1], threading.Event())))
