"""Energy-based endpointing with hangover: cut a call's audio into segments.

Pure and synchronous (numpy in, events out); one ``Endpointer`` per call.

Audio is cut into fixed frames (20 ms). A frame is *voiced* when its energy
is above ``max(threshold_db, noise_db + margin_db)``, where ``noise_db`` is
the line's background level: the quietest frame of the last
``noise_window_ms`` (minimum statistics; speech has pauses between words,
so the minimum stays at the line's noise while someone talks). Then:

- **onset**: voiced frames adding up to ``min_speech_ms`` before a gap of
  ``min_speech_ms`` start a segment; ``pre_roll_ms`` of audio before the
  first voiced frame is kept in it (word beginnings are quiet). Shorter
  bursts (clicks, a cough) are not segments.
- **endpoint**: ``silence_ms`` of unvoiced frames (the hangover) end it; the
  segment keeps ``tail_ms`` of that silence.
- **pause**: once ``tail_ms`` of silence have passed (when that is less than
  ``silence_ms``), the audio the segment will have *if* the silence lasts
  to the endpoint is known: ``SpeechPaused`` carries it (a final can be
  recognized ahead of the endpoint: speculative finals). A voiced frame
  before the endpoint gives ``SpeechResumed`` and the segment goes on.
- **max length**: a segment is cut at ``max_segment_ms``; speech that goes on
  starts the next segment right there.
- **flush** (hangup): the segment in progress ends where the audio ends.

Memory is bounded: the pre-roll ring plus one segment of at most
``max_segment_ms`` plus less than one frame of carry-over.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class EndpointerConfig:
    sample_rate: int = 8000
    frame_ms: int = 20
    silence_ms: int = 600
    max_segment_ms: int = 15_000
    min_speech_ms: int = 200
    pre_roll_ms: int = 200
    tail_ms: int = 300
    threshold_db: float = -45.0
    margin_db: float = 10.0
    noise_window_ms: int = 3000

    def __post_init__(self) -> None:
        if self.sample_rate not in (8000, 16000):
            raise ValueError(f"expected sample_rate 8000 or 16000, got {self.sample_rate}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"expected frame_ms 10, 20 or 30, got {self.frame_ms}")
        for name in ("silence_ms", "min_speech_ms", "max_segment_ms"):
            value = getattr(self, name)
            if value < self.frame_ms:
                raise ValueError(f"{name} must be at least one frame ({self.frame_ms} ms), got {value}")
        if self.max_segment_ms < self.min_speech_ms + self.pre_roll_ms:
            raise ValueError(
                f"max_segment_ms ({self.max_segment_ms}) must hold min_speech_ms + pre_roll_ms "
                f"({self.min_speech_ms + self.pre_roll_ms})"
            )
        if self.pre_roll_ms < 0 or self.tail_ms < 0:
            raise ValueError("pre_roll_ms and tail_ms must be >= 0")
        if self.tail_ms > self.silence_ms:
            raise ValueError(f"tail_ms ({self.tail_ms}) cannot exceed silence_ms ({self.silence_ms})")
        if self.noise_window_ms < 10 * self.frame_ms:
            raise ValueError(f"noise_window_ms must be at least {10 * self.frame_ms}, got {self.noise_window_ms}")
        if not -120.0 <= self.threshold_db <= 0.0:
            raise ValueError(f"threshold_db must be within -120..0 dBFS, got {self.threshold_db}")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        return -(-ms // self.frame_ms)  # ceil


@dataclass(frozen=True)
class SpeechStarted:
    serial: int  # 0, 1, 2 ... per segment of this call
    start_ms: int


@dataclass(frozen=True, eq=False)
class SegmentEnded:
    serial: int
    start_ms: int
    end_ms: int
    audio: np.ndarray  # (samples,) float32 at the config's sample rate, end_ms - start_ms long
    reason: str  # "silence" | "max_length" | "flush"
    # The voiced part: from the first voiced frame to the end of the last one
    # (the audio keeps pre-roll before it and tail after it). Talk-time
    # analytics use it, not the audio's bounds.
    speech_start_ms: int | None = None
    speech_end_ms: int | None = None


@dataclass(frozen=True, eq=False)
class SpeechPaused:
    """``tail_ms`` of silence into a segment: ``audio`` is exactly the audio its
    ``SegmentEnded`` will carry if no voiced frame comes before the endpoint."""

    serial: int
    start_ms: int
    audio: np.ndarray


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back after a ``SpeechPaused``: the segment goes on."""

    serial: int


Event = SpeechStarted | SegmentEnded | SpeechPaused | SpeechResumed


class _State(Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    SPEECH = "speech"


def frame_energy_db(frame: np.ndarray) -> float:
    """Mean power of a frame in dB relative to full scale (a full-scale square wave is 0)."""
    power = float(np.mean(np.square(frame, dtype=np.float64))) if frame.size else 0.0
    return 10.0 * np.log10(power + 1e-12)


class Endpointer:
    def __init__(self, config: EndpointerConfig | None = None) -> None:
        self.config = config or EndpointerConfig()
        c = self.config
        self._frame_len = c.frame_samples
        self._rest = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0  # frames processed so far (the clock)
        self._state = _State.IDLE
        # (frame index, energy) with increasing energies: the window's minimum is first.
        self._noise: deque[tuple[int, float]] = deque()
        self._noise_frames = c.frames(c.noise_window_ms)
        self._pre_roll: deque[np.ndarray] = deque(maxlen=c.frames(c.pre_roll_ms))
        self._seg: list[np.ndarray] = []  # frames of the candidate or segment
        self._seg_start = 0  # frame index of self._seg[0]
        self._voiced = 0  # voiced frames of the candidate
        self._gap = 0  # unvoiced frames in a row
        self._first_voiced = 0  # frame index of the segment's first and last voiced frames
        self._last_voiced = 0
        self._serial = 0
        self._max_frames = c.frames(c.max_segment_ms)
        # Silent frames after which the segment's audio is known (None: only at the endpoint).
        tail = c.frames(c.tail_ms)
        self._pause_frames = tail if 0 < tail < c.frames(c.silence_ms) else None

    # --- inspection ---

    @property
    def in_speech(self) -> bool:
        return self._state is _State.SPEECH

    @property
    def paused(self) -> bool:
        """In a segment, past the tail of a pause (after ``SpeechPaused``, before the endpoint)."""
        return self.in_speech and self._pause_frames is not None and self._gap >= self._pause_frames

    @property
    def serial(self) -> int:
        """Serial of the segment in progress (or of the next one)."""
        return self._serial

    @property
    def position_ms(self) -> int:
        """Audio time processed so far, in whole frames."""
        return self._frames_seen * self.config.frame_ms

    @property
    def buffered_samples(self) -> int:
        return sum(f.size for f in self._seg) + sum(f.size for f in self._pre_roll) + self._rest.size

    def segment_samples(self) -> int:
        """Samples in the segment in progress (0 outside speech)."""
        return len(self._seg) * self._frame_len if self.in_speech else 0

    def segment_audio(self, from_sample: int = 0) -> np.ndarray:
        """Audio of the segment in progress from ``from_sample`` on."""
        if not self.in_speech:
            return np.zeros(0, dtype=np.float32)
        first = from_sample // self._frame_len
        out = np.concatenate(self._seg[first:]) if first < len(self._seg) else np.zeros(0, dtype=np.float32)
        return out[from_sample - first * self._frame_len :]

    # --- input ---

    def push(self, audio: np.ndarray) -> list[Event]:
        """Feed float audio in [-1, 1] at the config's sample rate, any length."""
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._rest.size:
            samples = np.concatenate([self._rest, samples])
        n_frames = samples.size // self._frame_len
        events: list[Event] = []
        for i in range(n_frames):
            frame = samples[i * self._frame_len : (i + 1) * self._frame_len]
            self._frame(frame.copy(), events)
        self._rest = samples[n_frames * self._frame_len :].copy()
        return events

    def flush(self) -> list[Event]:
        """End of the audio: the segment in progress (if any) ends where the
        speech in it ends (plus the tail), at most where the audio ends."""
        events: list[Event] = []
        if self._state is _State.SPEECH:
            drop = max(0, self._gap - self.config.frames(self.config.tail_ms))
            frames = self._seg[: len(self._seg) - drop]
            if not drop and self._rest.size and len(frames) < self._max_frames:
                frames.append(self._rest)  # the carry-over (under a frame) follows speech or tail: keep it
            events.append(self._end(np.concatenate(frames), "flush"))
        self._state = _State.IDLE
        self._seg = []
        self._rest = np.zeros(0, dtype=np.float32)
        return events

    # --- the state machine, one frame at a time ---

    @property
    def noise_db(self) -> float:
        """The line's background level: the quietest recent frame."""
        return self._noise[0][1] if self._noise else self.config.threshold_db - self.config.margin_db

    def _voiced_frame(self, index: int, energy_db: float) -> bool:
        c = self.config
        voiced = energy_db > max(c.threshold_db, self.noise_db + c.margin_db)
        # Monotonic queue: O(1) amortized sliding minimum.
        while self._noise and self._noise[-1][1] >= energy_db:
            self._noise.pop()
        self._noise.append((index, energy_db))
        if self._noise[0][0] <= index - self._noise_frames:
            self._noise.popleft()
        return voiced

    def _frame(self, frame: np.ndarray, events: list[Event]) -> None:
        c = self.config
        index = self._frames_seen
        self._frames_seen += 1
        voiced = self._voiced_frame(index, frame_energy_db(frame))

        if self._state is _State.IDLE:
            if voiced:
                self._state = _State.CANDIDATE
                self._seg = [*self._pre_roll, frame]
                self._seg_start = index - len(self._pre_roll)
                self._first_voiced = self._last_voiced = index
                self._pre_roll.clear()
                self._voiced, self._gap = 1, 0
                self._maybe_onset(events)
            else:
                self._pre_roll.append(frame)
            return

        if self._state is _State.CANDIDATE:
            self._seg.append(frame)
            self._gap = 0 if voiced else self._gap + 1
            self._voiced += voiced
            if voiced:
                self._last_voiced = index
            if self._gap >= c.frames(c.min_speech_ms):
                # A burst too short to be speech: back to listening.
                self._state = _State.IDLE
                self._pre_roll.extend(self._seg)
                self._seg = []
            else:
                self._maybe_onset(events)
            return

        # SPEECH
        if len(self._seg) >= self._max_frames:
            # Full: cut here; speech that goes on opens the next segment with this frame.
            events.append(self._end(np.concatenate(self._seg), "max_length"))
            self._seg = []
            if voiced:
                self._seg, self._seg_start = [frame], index
                self._first_voiced = self._last_voiced = index
                events.append(SpeechStarted(serial=self._serial, start_ms=index * c.frame_ms))
            else:
                self._state = _State.IDLE
                self._pre_roll.append(frame)
            return
        self._seg.append(frame)
        paused = self.paused
        self._gap = 0 if voiced else self._gap + 1
        if voiced:
            self._last_voiced = index
            if paused:
                events.append(SpeechResumed(serial=self._serial))
        elif self._gap == self._pause_frames:
            events.append(
                SpeechPaused(serial=self._serial, start_ms=self._seg_start * c.frame_ms, audio=np.concatenate(self._seg))
            )
        if self._gap >= c.frames(c.silence_ms):
            drop = self._gap - c.frames(c.tail_ms)
            kept, dropped = self._seg[: len(self._seg) - drop], self._seg[len(self._seg) - drop :]
            events.append(self._end(np.concatenate(kept), "silence"))
            self._state = _State.IDLE
            self._seg = []
            self._pre_roll.extend(dropped)

    def _maybe_onset(self, events: list[Event]) -> None:
        c = self.config
        if self._voiced * c.frame_ms >= c.min_speech_ms:
            self._state = _State.SPEECH
            events.append(SpeechStarted(serial=self._serial, start_ms=self._seg_start * c.frame_ms))

    def _end(self, audio: np.ndarray, reason: str) -> SegmentEnded:
        c = self.config
        start_ms = self._seg_start * c.frame_ms
        end_ms = start_ms + audio.size * 1000 // c.sample_rate
        speech_start = min(max(start_ms, self._first_voiced * c.frame_ms), end_ms)
        speech_end = min(max(speech_start, (self._last_voiced + 1) * c.frame_ms), end_ms)
        event = SegmentEnded(
            serial=self._serial, start_ms=start_ms, end_ms=end_ms, audio=audio, reason=reason,
            speech_start_ms=speech_start, speech_end_ms=speech_end,
        )  # fmt: skip
        self._serial += 1
        self._gap = 0
        return event
