"""Per-call conversation figures, as pure functions over the call's turns.

A *turn* is one stored segment: who spoke (``customer`` or ``agent``),
from when to when (ms from the start of the call; the voiced part where the
endpointer recorded it) and how many words were recognized in it. No Django
here: ``services.analytics_compute`` reads the rows and stores the result.

- **talk time** per party: the union of that party's turns (a party's own
  turns never count twice);
- **silence**: the time in ``[0, duration]`` where nobody speaks, and the
  longest such stretch;
- **overlap**: the time both parties speak at once;
- **interruptions** of a party: the times it starts a turn while the other
  party is speaking and both go on together for at least
  ``min_interruption_ms`` (a short back-channel "mhm" under the other's
  speech, or a turn that merely touches the other's end, is not one);
- **words per minute** per party: recognized words over talk time (none
  when the party did not speak).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PARTIES = ("customer", "agent")
DEFAULT_MIN_INTERRUPTION_MS = 300

Interval = tuple[int, int]  # (start_ms, end_ms), start <= end


@dataclass(frozen=True)
class Turn:
    speaker: str
    start_ms: int
    end_ms: int
    words: int = 0

    def __post_init__(self) -> None:
        if self.speaker not in PARTIES:
            raise ValueError(f"speaker must be one of {', '.join(PARTIES)}, got {self.speaker!r}")
        if not 0 <= self.start_ms <= self.end_ms:
            raise ValueError(f"a turn needs 0 <= start_ms <= end_ms, got {self.start_ms}..{self.end_ms}")
        if self.words < 0:
            raise ValueError(f"words must be >= 0, got {self.words}")


@dataclass(frozen=True)
class CallFigures:
    duration_ms: int
    talk_ms: dict[str, int]
    silence_ms: int
    longest_silence_ms: int
    overlap_ms: int
    interruptions: dict[str, int]
    words_per_minute: dict[str, float | None]
    # For drawing the call: each party's speech, the silences and the overlaps.
    speech: dict[str, list[Interval]] = field(default_factory=dict)
    silences: list[Interval] = field(default_factory=list)
    overlaps: list[Interval] = field(default_factory=list)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same time (touching ones joined)."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def total(intervals: Iterable[Interval]) -> int:
    return sum(end - start for start, end in intervals)


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two sorted disjoint interval lists (two pointers)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def gaps(intervals: Sequence[Interval], *, duration_ms: int) -> list[Interval]:
    """The stretches of ``[0, duration_ms]`` that sorted disjoint ``intervals`` leave uncovered."""
    out: list[Interval] = []
    at = 0
    for start, end in intervals:
        if start > at:
            out.append((at, min(start, duration_ms)))
        at = max(at, end)
        if at >= duration_ms:
            break
    if at < duration_ms:
        out.append((at, duration_ms))
    return [(s, e) for s, e in out if e > s]


def interruptions(turns: Sequence[Turn], *, min_overlap_ms: int = DEFAULT_MIN_INTERRUPTION_MS) -> dict[str, int]:
    """Per party, how many of its turns start while the other party is
    speaking and overlap that speech for at least ``min_overlap_ms``."""
    if min_overlap_ms < 0:
        raise ValueError(f"min_overlap_ms must be >= 0, got {min_overlap_ms}")
    speech = {p: merge((t.start_ms, t.end_ms) for t in turns if t.speaker == p) for p in PARTIES}
    counts = dict.fromkeys(PARTIES, 0)
    for turn in turns:
        other = speech["agent" if turn.speaker == "customer" else "customer"]
        for start, end in other:
            # The other party was already speaking (strictly) when this turn began.
            if start < turn.start_ms < end:
                if min(end, turn.end_ms) - turn.start_ms >= min_overlap_ms:
                    counts[turn.speaker] += 1
                break
    return counts


def call_figures(
    turns: Sequence[Turn], *, duration_ms: int | None = None, min_interruption_ms: int = DEFAULT_MIN_INTERRUPTION_MS
) -> CallFigures:
    """Every figure of one call. ``duration_ms`` defaults to the end of the last turn."""
    last_end = max((t.end_ms for t in turns), default=0)
    duration = last_end if duration_ms is None else max(int(duration_ms), last_end)
    speech = {p: merge((t.start_ms, t.end_ms) for t in turns if t.speaker == p) for p in PARTIES}
    talk = {p: total(speech[p]) for p in PARTIES}
    anyone = merge([*speech["customer"], *speech["agent"]])
    silences = gaps(anyone, duration_ms=duration)
    overlaps = intersect(speech["customer"], speech["agent"])
    words = {p: sum(t.words for t in turns if t.speaker == p) for p in PARTIES}
    wpm = {p: (round(words[p] * 60_000 / talk[p], 1) if talk[p] > 0 else None) for p in PARTIES}
    return CallFigures(
        duration_ms=duration,
        talk_ms=talk,
        silence_ms=total(silences),
        longest_silence_ms=max((e - s for s, e in silences), default=0),
        overlap_ms=total(overlaps),
        interruptions=interruptions(turns, min_overlap_ms=min_interruption_ms),
        words_per_minute=wpm,
        speech=speech,
        silences=silences,
        overlaps=overlaps,
    )
