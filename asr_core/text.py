"""Text normalization and the character vocabulary of the CTC model.

Reference and hypothesis are normalized the same way before scoring:
lower case, digits and common written forms ($, %, @, .) spoken as words,
punctuation dropped, whitespace collapsed.
"""
from __future__ import annotations

import re

BLANK = "-"
SPACE = "|"
# index 0 is the CTC blank; "|" is the word boundary (torchaudio's convention)
VOCAB: tuple[str, ...] = (BLANK, SPACE, "'", *"abcdefghijklmnopqrstuvwxyz")
_INDEX = {c: i for i, c in enumerate(VOCAB)}

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """0 <= n < 10**12 as English words: 342 -> 'three hundred forty two'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for div, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= div:
            rest = n % div
            return number_to_words(n // div) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def digits_to_words(s: str) -> str:
    """'4021' -> 'four zero two one' (how account numbers are read out)."""
    return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def year_to_words(y: int) -> str:
    """1987 -> 'nineteen eighty seven', 2005 -> 'two thousand five', 2024 -> 'twenty twenty four'."""
    if 2000 <= y < 2010 or y % 100 == 0 and y % 1000 == 0:
        return number_to_words(y)
    hi, lo = divmod(y, 100)
    return number_to_words(hi) + " " + (number_to_words(lo) if lo >= 10 else "oh " + number_to_words(lo) if lo else "hundred")


def _spell_number_token(tok: str) -> str:
    # years as years; other strings of 4+ digits (cards, accounts) digit by digit; short ones as numbers
    if len(tok) == 4 and 1900 <= int(tok) < 2100:
        return year_to_words(int(tok))
    if len(tok) >= 4 or (len(tok) > 1 and tok.startswith("0")):
        return digits_to_words(tok)
    return number_to_words(int(tok))


_GROUPED_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_ORD_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_MONEY_RE = re.compile(r"\$(\d+)(?:\.(\d\d))?")
_PERCENT_RE = re.compile(r"(\d+)\s*%")
_DIGITS_RE = re.compile(r"\d+")


def normalize(text: str) -> str:
    """Spoken-form, lower-case text with only [a-z' ] characters."""
    t = text.lower()
    # comma-grouped numbers ("2,051", "$1,200.50") are cardinals, not digit strings
    t = re.sub(r"\$(\d{1,3}(?:,\d{3})+)", lambda m: "$" + m.group(1).replace(",", ""), t)
    t = _GROUPED_RE.sub(lambda m: " " + number_to_words(int(m.group(0).replace(",", ""))) + " ", t)
    t = _MONEY_RE.sub(lambda m: number_to_words(int(m.group(1))) + " dollars"
                      + (f" and {number_to_words(int(m.group(2)))} cents" if m.group(2) and int(m.group(2)) else ""), t)
    t = _PERCENT_RE.sub(lambda m: number_to_words(int(m.group(1))) + " percent", t)
    t = _ORD_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), t)
    t = t.replace("@", " at ").replace("&", " and ")
    t = re.sub(r"(?<=\w)\.(?=\w)", " dot ", t)  # e-mail / web dots
    t = _DIGITS_RE.sub(lambda m: " " + _spell_number_token(m.group(0)) + " ", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    t = re.sub(r"(^|\s)'+|'+(\s|$)", " ", t)  # quotes, not apostrophes inside words
    return " ".join(t.split())


def encode(text: str) -> list[int]:
    """Normalized text -> token ids (no blanks). Unknown characters are dropped."""
    return [_INDEX[c] for c in normalize(text).replace(" ", SPACE) if c in _INDEX]


def decode_ids(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids if i != 0).replace(SPACE, " ").strip()
