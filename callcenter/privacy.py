"""Redaction of payment card numbers from transcripts.

A card number is a run of 13 to 19 digits that passes the Luhn check,
written as digits (``4111 1111 1111 1111``, ``4111-1111-1111-1111``) or
spoken digit by digit (``four one one one ...``, ``oh`` for zero), the way
the recognizer writes it. The run is replaced by ``[card-number]``; in a
word list the run's words become one word with that text, spanning their
times. Digit runs that fail the Luhn check (order numbers, phone numbers)
are kept.

Partial hypotheses are cut mid-number: a number still being spoken cannot
be Luhn-checked yet, so ``redact_partial`` also hides every run of
``PARTIAL_MIN_DIGITS`` or more digits (the final result then shows what
the Luhn rule keeps).

Pure functions: whether to redact is the caller's decision
(``settings.PRIVACY_REDACT_CARD_NUMBERS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

REDACTED = "[card-number]"
MIN_DIGITS, MAX_DIGITS = 13, 19
PARTIAL_MIN_DIGITS = 8

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_DIGITS = re.compile(r"^\d+(?:[-.]\d+)*$")
_EDGE_PUNCTUATION = ",.;:!?()\"'"


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _token_digits(token: str) -> str | None:
    """The digits a token stands for, or None for a token that is not a number."""
    word = token.strip(_EDGE_PUNCTUATION).lower()
    if word in _DIGIT_WORDS:
        return _DIGIT_WORDS[word]
    if _DIGITS.match(word):
        return re.sub(r"\D", "", word)
    return None


def card_spans(tokens: Sequence[str], *, partial: bool = False) -> list[tuple[int, int]]:
    """``[start, end)`` token ranges that spell a Luhn-valid card number.

    Within each run of number tokens, the longest stretch (from the
    earliest start) whose digits are 13 to 19 long and Luhn-valid wins."""
    digits = [_token_digits(t) for t in tokens]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if digits[i] is None:
            i += 1
            continue
        run_end = i
        while run_end < len(tokens) and digits[run_end] is not None:
            run_end += 1
        run_digits = sum(len(d) for d in digits[i:run_end])  # type: ignore[arg-type]
        if partial and run_digits >= PARTIAL_MIN_DIGITS:
            spans.append((i, run_end))
            i = run_end
            continue
        start = i
        while start < run_end:
            found = None
            for end in range(run_end, start, -1):
                number = "".join(digits[start:end])  # type: ignore[arg-type]
                if MIN_DIGITS <= len(number) <= MAX_DIGITS and luhn_valid(number):
                    found = end
                    break
            if found is None:
                start += 1
            else:
                spans.append((start, found))
                start = found
        i = run_end
    return spans


def redact_text(text: str, *, partial: bool = False) -> str:
    """``text`` with every card number replaced by ``[card-number]``
    (``partial``: and every run of 8+ digits)."""
    if not text:
        return text
    tokens = text.split()
    spans = card_spans(tokens, partial=partial)
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end in spans:
        out.extend(tokens[position:start])
        out.append(REDACTED)
        position = end
    out.extend(tokens[position:])
    return " ".join(out)


def redact_words(words: Sequence[Mapping[str, object]], *, partial: bool = False) -> list[dict[str, object]]:
    """A word list (``{"w", "start", "end", "conf"}``) with each card number's
    words merged into one ``[card-number]`` word over their times."""
    spans = card_spans([str(w.get("w", "")) for w in words], partial=partial)
    if not spans:
        return [dict(w) for w in words]
    out: list[dict[str, object]] = []
    position = 0
    for start, end in spans:
        out.extend(dict(w) for w in words[position:start])
        run = words[start:end]
        out.append(
            {
                "w": REDACTED,
                "start": run[0].get("start", 0.0),
                "end": run[-1].get("end", 0.0),
                "conf": min(float(w.get("conf", 1.0)) for w in run),  # type: ignore[arg-type]
            }
        )
        position = end
    out.extend(dict(w) for w in words[position:])
    return out


def is_redacted(text: str) -> bool:
    return REDACTED in text
