"""The endpointer cuts a call's audio into segments where a person would."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.streaming.endpointer import (
    Endpointer,
    EndpointerConfig,
    SegmentEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)

SR = 8000


def tone(ms: int, amp: float = 0.3, freq: float = 440.0) -> np.ndarray:
    """Speech-like: a tone with syllables (4 Hz loudness modulation down to a near pause)."""
    t = np.arange(SR * ms // 1000) / SR
    syllables = 0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)
    return (amp * syllables * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hiss(ms: int, db: float = -60.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=SR * ms // 1000) * 10 ** (db / 20)).astype(np.float32)


def run(audio: np.ndarray, chunks: list[int] | None = None, config: EndpointerConfig | None = None):
    ep = Endpointer(config)
    events, pos = [], 0
    for size in chunks or [len(audio)]:
        events += ep.push(audio[pos : pos + size])
        pos += size
    events += ep.push(audio[pos:])
    return events + ep.flush(), ep


def segments(events) -> list[SegmentEnded]:
    return [e for e in events if isinstance(e, SegmentEnded)]


def test_each_utterance_between_pauses_becomes_one_segment_with_pre_roll_and_tail():
    audio = np.concatenate([hiss(500), tone(1000), hiss(1000), tone(1500), hiss(1000)])

    found = segments(run(audio)[0])

    assert [(s.start_ms, s.end_ms, s.reason) for s in found] == [(300, 1800, "silence"), (2300, 4300, "silence")]
    assert all(len(s.audio) == (s.end_ms - s.start_ms) * SR // 1000 for s in found)


def test_speech_start_is_announced_before_the_segment_ends_with_the_same_serial():
    events = [e for e in run(np.concatenate([hiss(300), tone(800), hiss(800)]))[0] if not isinstance(e, SpeechPaused)]

    assert isinstance(events[0], SpeechStarted) and isinstance(events[1], SegmentEnded)
    assert events[0].serial == events[1].serial == 0 and events[0].start_ms == events[1].start_ms


def test_a_click_shorter_than_min_speech_is_not_a_segment():
    assert run(np.concatenate([hiss(500), tone(100), hiss(1000)]))[0] == []


def test_a_pause_shorter_than_the_silence_setting_does_not_split_a_segment():
    audio = np.concatenate([hiss(300), tone(800), hiss(400), tone(800), hiss(1000)])

    found = segments(run(audio)[0])

    assert len(found) == 1 and found[0].end_ms - found[0].start_ms == 200 + 800 + 400 + 800 + 300


def test_a_pause_past_the_tail_announces_the_audio_the_segment_then_ends_with():
    events = run(np.concatenate([hiss(300), tone(800), hiss(1000)]))[0]

    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechPaused, SegmentEnded]
    paused, ended = events[1], events[2]
    assert paused.serial == ended.serial == 0 and paused.start_ms == ended.start_ms
    assert np.array_equal(paused.audio, ended.audio), "the final can be recognized from the pause's audio"


def test_speech_that_comes_back_after_the_tail_resumes_the_segment_and_the_pause_audio_is_not_its_audio():
    # 400 ms of silence: past the 300 ms tail (a pause), short of the 600 ms endpoint.
    events = run(np.concatenate([hiss(300), tone(800), hiss(400), tone(800), hiss(1000)]))[0]

    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, SegmentEnded]
    first_pause, last_pause, ended = events[1], events[3], events[4]
    assert {e.serial for e in events} == {0}
    assert len(first_pause.audio) < len(ended.audio)
    assert np.array_equal(last_pause.audio, ended.audio)


def test_a_hangup_during_a_pause_ends_the_segment_with_the_pause_audio():
    ep = Endpointer()
    events = ep.push(np.concatenate([hiss(300), tone(800), hiss(450)])) + ep.flush()

    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SegmentEnded]
    assert events[2].reason == "flush" and np.array_equal(events[1].audio, events[2].audio)


def test_a_short_gap_within_the_tail_is_no_pause():
    events = run(np.concatenate([hiss(300), tone(800), hiss(200), tone(800), hiss(1000)]))[0]

    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SegmentEnded]


def test_no_pause_is_announced_when_the_tail_is_the_whole_hangover_or_none():
    audio = np.concatenate([hiss(300), tone(800), hiss(1000)])
    for config in (EndpointerConfig(silence_ms=300, tail_ms=300), EndpointerConfig(tail_ms=0)):
        events = run(audio, config=config)[0]
        assert [type(e) for e in events] == [SpeechStarted, SegmentEnded]


def test_long_speech_is_cut_at_max_segment_length_and_goes_on_in_the_next_segment():
    config = EndpointerConfig(max_segment_ms=2000)
    events, _ = run(np.concatenate([hiss(300), tone(5000), hiss(1000)]), config=config)

    found = segments(events)
    assert [s.reason for s in found] == ["max_length", "max_length", "silence"]
    assert all(s.end_ms - s.start_ms <= 2000 for s in found)
    assert [s.start_ms for s in found[1:]] == [s.end_ms for s in found[:-1]], "no audio is lost between them"
    assert [e.serial for e in events if isinstance(e, SpeechStarted)] == [0, 1, 2]


def test_flush_at_hangup_ends_the_segment_in_progress_with_everything_received():
    audio = np.concatenate([hiss(300), tone(1234)])

    events, ep = run(audio)

    (last,) = segments(events)
    assert last.reason == "flush" and last.start_ms == 100 and last.end_ms == 1534
    assert len(last.audio) == len(audio) - 100 * SR // 1000
    assert ep.flush() == []


def test_the_noise_floor_adapts_so_a_noisy_line_is_not_one_long_segment():
    # Loud line noise (-40 dBFS, above the absolute threshold) with speech 25 dB above it.
    audio = np.concatenate([hiss(3000, db=-40), tone(1000, amp=0.3), hiss(1500, db=-40, seed=1)])

    found = segments(run(audio)[0])

    assert len(found) == 1 and 2500 <= found[0].start_ms <= 3000 and found[0].end_ms <= 4300


def test_silence_alone_makes_no_events_and_little_memory():
    events, ep = run(np.zeros(SR * 60, dtype=np.float32), chunks=[160] * 3000)

    assert events == []
    assert ep.buffered_samples <= EndpointerConfig().frames(200) * 160


def test_sixteen_khz_audio_is_endpointed_at_the_same_times():
    audio8 = np.concatenate([hiss(500), tone(1000), hiss(1000)])
    audio16 = np.repeat(audio8, 2)

    s8 = segments(run(audio8)[0])
    s16 = segments(run(audio16, config=EndpointerConfig(sample_rate=16000))[0])

    assert [(s.start_ms, s.end_ms) for s in s8] == [(s.start_ms, s.end_ms) for s in s16]
    assert len(s16[0].audio) == 2 * len(s8[0].audio)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sample_rate", 44100, "expected sample_rate 8000 or 16000, got 44100"),
        ("silence_ms", 5, "silence_ms must be at least one frame"),
        ("max_segment_ms", 300, "must hold min_speech_ms + pre_roll_ms"),
        ("tail_ms", 900, "tail_ms (900) cannot exceed silence_ms (600)"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EndpointerConfig(**{field: value})


# --- properties ---

_pieces = st.lists(
    st.tuples(st.sampled_from(["tone", "hiss", "click"]), st.integers(min_value=20, max_value=2500)),
    min_size=1,
    max_size=8,
)


def _render(pieces) -> np.ndarray:
    parts = []
    for i, (kind, ms) in enumerate(pieces):
        if kind == "tone":
            parts.append(tone(ms, amp=0.05 + 0.05 * (i % 5)))
        elif kind == "click":
            parts.append(tone(min(ms, 120), amp=0.5))
        else:
            parts.append(hiss(ms, seed=i))
    return np.concatenate(parts)


@settings(max_examples=40, deadline=None)
@given(pieces=_pieces, chunk=st.integers(min_value=37, max_value=4000), max_segment_ms=st.sampled_from([1000, 15000]))
def test_segments_are_ordered_bounded_exact_and_do_not_depend_on_how_audio_was_chunked(pieces, chunk, max_segment_ms):
    config = EndpointerConfig(max_segment_ms=max_segment_ms)
    audio = _render(pieces)

    whole = segments(run(audio, config=config)[0])
    events, _ = run(audio, chunks=[chunk] * (len(audio) // chunk), config=config)
    chunked = segments(events)

    assert [(s.start_ms, s.end_ms, s.reason) for s in whole] == [(s.start_ms, s.end_ms, s.reason) for s in chunked]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(whole, chunked, strict=True))
    duration_ms = len(audio) * 1000 // SR
    previous_end = 0
    for s in chunked:
        assert previous_end <= s.start_ms < s.end_ms <= duration_ms + 20
        assert s.end_ms - s.start_ms <= max_segment_ms
        assert len(s.audio) == (s.end_ms - s.start_ms) * SR // 1000
        # The segment's audio is the call's audio at those times.
        start = s.start_ms * SR // 1000
        assert np.array_equal(s.audio, audio[start : start + len(s.audio)])
        previous_end = s.end_ms
    started = [e.serial for e in events if isinstance(e, SpeechStarted)]
    assert started == [s.serial for s in chunked] == list(range(len(chunked)))
    # A pause not followed by speech announced the exact audio its segment ended with at the
    # endpoint; speech resumes only after a pause of the same segment.
    last_pause: dict[int, SpeechPaused | None] = {}
    for e in events:
        if isinstance(e, SpeechPaused):
            last_pause[e.serial] = e
        elif isinstance(e, SpeechResumed):
            assert last_pause.get(e.serial) is not None
            last_pause[e.serial] = None
        elif isinstance(e, SegmentEnded) and e.reason == "silence":
            assert last_pause.get(e.serial) is not None and np.array_equal(last_pause[e.serial].audio, e.audio)
