"""Sentiment of what each party said, with VADER (``vaderSentiment``, a
lexicon and rule model; MIT licence): a compound score in [-1, 1] per
segment (above 0.05 positive, below -0.05 negative, as VADER's authors
suggest), and per party the mean of its segments' scores weighted by their
number of words (a long complaint weighs more than a short "okay")."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

POSITIVE = 0.05
NEGATIVE = -0.05


@lru_cache(maxsize=1)
def _analyzer():
    # Loads the lexicon (~7,500 entries) once per process.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def score(text: str) -> float | None:
    """VADER's compound score of ``text``; None for text without words."""
    if not text or not any(ch.isalnum() for ch in text):
        return None
    return round(float(_analyzer().polarity_scores(text)["compound"]), 4)


def label(value: float | None) -> str:
    if value is None:
        return "none"
    if value >= POSITIVE:
        return "positive"
    if value <= NEGATIVE:
        return "negative"
    return "neutral"


def weighted_mean(scored: Iterable[tuple[float | None, int]]) -> float | None:
    """Mean of (score, words) pairs weighted by words; None when nothing was scored."""
    num = den = 0.0
    for value, words in scored:
        if value is None:
            continue
        weight = max(1, words)
        num += value * weight
        den += weight
    return round(num / den, 4) if den else None
