"""What every backbone returns: a `Transcript`, text plus `Word`s with start/end seconds and a
confidence in [0, 1]. Shared by the small model's CTC decoding (`asr_core.small.decoder`) and
Whisper (`asr_core.whisper.recognizer`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    w: str
    start: float
    end: float
    conf: float

    def as_dict(self) -> dict:
        return {"w": self.w, "start": round(self.start, 3), "end": round(self.end, 3), "conf": round(self.conf, 3)}


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    # Whisper: the mean token log-prob of the text as the search that chose it scored it (its
    # `Hypothesis.avg_logprob`), where the segment was decoded in one window without a prompt;
    # comparable with another search only under the same `WhisperRecognizer.scoring_key`. None
    # elsewhere. Not part of a transcript's identity (equality) or of `as_dict`.
    avg_logprob: float | None = field(default=None, compare=False)

    @property
    def confidence(self) -> float:
        return sum(w.conf for w in self.words) / len(self.words) if self.words else 0.0

    def as_dict(self) -> dict:
        return {"text": self.text, "words": [w.as_dict() for w in self.words], "conf": round(self.confidence, 3)}
