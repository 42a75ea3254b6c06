"""Conversation figures from turns: talk, silence, overlap, interruptions, words per minute."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.analytics.compute import Turn, call_figures, gaps, interruptions, intersect, merge, total


def test_a_two_party_call_gives_talk_silence_overlap_and_one_interruption():
    turns = [
        Turn("agent", 500, 3000, words=8),  # greeting
        Turn("customer", 4000, 9000, words=15),
        Turn("agent", 8200, 11000, words=9),  # starts 800 ms before the customer stops: an interruption
        Turn("customer", 13000, 14000, words=2),
    ]
    f = call_figures(turns, duration_ms=15000)

    assert f.talk_ms == {"customer": 6000, "agent": 5300}
    assert f.overlap_ms == 800
    assert f.overlaps == [(8200, 9000)]
    # 0-500, 3000-4000, 11000-13000, 14000-15000
    assert f.silences == [(0, 500), (3000, 4000), (11000, 13000), (14000, 15000)]
    assert f.silence_ms == 4500 and f.longest_silence_ms == 2000
    assert f.interruptions == {"customer": 0, "agent": 1}
    assert f.words_per_minute == {"customer": round(17 * 60000 / 6000, 1), "agent": round(17 * 60000 / 5300, 1)}
    assert f.talk_ms["customer"] + f.talk_ms["agent"] - f.overlap_ms + f.silence_ms == f.duration_ms


def test_an_overlap_shorter_than_the_bound_is_not_an_interruption():
    turns = [Turn("customer", 0, 5000), Turn("agent", 4900, 6000), Turn("agent", 1000, 1200)]
    # 100 ms into the customer's end, and a 200 ms "mhm": both under 300 ms
    assert interruptions(turns, min_overlap_ms=300) == {"customer": 0, "agent": 0}
    assert interruptions(turns, min_overlap_ms=100) == {"customer": 0, "agent": 2}


def test_turns_that_only_touch_are_not_an_interruption_nor_overlap():
    f = call_figures([Turn("customer", 0, 2000), Turn("agent", 2000, 3000)])
    assert f.overlap_ms == 0 and f.interruptions == {"customer": 0, "agent": 0}
    assert f.silence_ms == 0 and f.duration_ms == 3000


def test_a_party_who_said_nothing_has_no_words_per_minute_and_an_empty_call_is_all_silence():
    f = call_figures([Turn("customer", 0, 1000, words=3)], duration_ms=2000)
    assert f.words_per_minute == {"customer": 180.0, "agent": None}
    empty = call_figures([], duration_ms=4000)
    assert empty.silence_ms == empty.longest_silence_ms == 4000 and empty.talk_ms == {"customer": 0, "agent": 0}


def test_a_party_s_own_overlapping_segments_count_once():
    f = call_figures([Turn("agent", 0, 3000), Turn("agent", 2000, 4000)])
    assert f.talk_ms["agent"] == 4000 and f.overlap_ms == 0


@pytest.mark.parametrize(
    "kwargs", [{"speaker": "caller", "start_ms": 0, "end_ms": 1}, {"speaker": "agent", "start_ms": 5, "end_ms": 1},
               {"speaker": "agent", "start_ms": -1, "end_ms": 1}, {"speaker": "agent", "start_ms": 0, "end_ms": 1, "words": -2}],
)  # fmt: skip
def test_a_bad_turn_is_refused(kwargs):
    with pytest.raises(ValueError):
        Turn(**kwargs)


intervals = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3_000)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=12)  # fmt: skip


@given(intervals, intervals)
def test_interval_algebra_matches_a_millisecond_count(a, b):
    covered_a = {ms for s, e in a for ms in range(s, e)}
    covered_b = {ms for s, e in b for ms in range(s, e)}
    ma, mb = merge(a), merge(b)
    assert total(ma) == len(covered_a)
    assert total(intersect(ma, mb)) == len(covered_a & covered_b)
    assert total(gaps(merge(ma + mb), duration_ms=14_000)) == 14_000 - len({m for m in covered_a | covered_b if m < 14_000})
