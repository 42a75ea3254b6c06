"""Category rules, compiled and matched as pure functions (no Django).

A rule is what an administrator writes in the admin (``CategoryRule``):

- ``phrases``: one per line. Words match whole words, case and punctuation
  ignored ("cancel my account" matches "Cancel my account!"); a word ending
  in ``*`` matches any word it begins ("refund*": refund, refunds,
  refunded); a line starting with ``re:`` is a regular expression over the
  final's normalized text (lower case, words separated by one space).
- ``match``: ``any`` (one of the phrases is said), ``all`` (every word of
  the set is said in one final, in any order; each line is one word), or
  ``absent`` (none of the phrases is said by the party within the window:
  decided once the window has passed, e.g. "no greeting from the agent in
  the first 10 s").
- ``party``: ``customer``, ``agent`` or ``any``.
- an optional window (seconds from the start of the call) the words must
  fall in.

``compile_rule`` turns it into a ``CompiledRule`` or raises ``InvalidRule``
saying what is wrong (an empty phrase, a bad regular expression, a window
that ends before it starts, ...): the admin shows that message and stores
nothing; a stored rule that no longer compiles is skipped with a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callcenter.errors import InvalidInput

MATCH_ANY = "any"
MATCH_ALL = "all"
MATCH_ABSENT = "absent"
MATCHES = (MATCH_ANY, MATCH_ALL, MATCH_ABSENT)
PARTIES = ("customer", "agent", "any")
MAX_PHRASES = 200
MAX_PHRASE_LENGTH = 200

_WORD = re.compile(r"[\w']+")
_PLAIN_WORD = re.compile(r"^[\w']+\*?$")


class InvalidRule(InvalidInput):
    """A category rule that does not compile."""

    code = "invalid_rule"


def normalize_tokens(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped ("Don't!" -> ["don't"])."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


@dataclass(frozen=True)
class CompiledRule:
    name: str
    match: str
    party: str
    patterns: tuple[re.Pattern, ...]  # for any / absent
    words: tuple[re.Pattern, ...]  # for all: one pattern per word
    window_start_ms: int
    window_end_ms: int | None

    def applies_to(self, speaker: str) -> bool:
        return self.party == "any" or self.party == speaker

    def in_window(self, at_ms: int) -> bool:
        return at_ms >= self.window_start_ms and (self.window_end_ms is None or at_ms <= self.window_end_ms)


def _phrase_pattern(line: str, *, rule: str, number: int) -> re.Pattern:
    where = f"rule {rule!r}, phrase {number} ({line[:60]!r})"
    if len(line) > MAX_PHRASE_LENGTH:
        raise InvalidRule(f"{where}: longer than {MAX_PHRASE_LENGTH} characters", rule=rule, phrase=number)
    if line.startswith("re:"):
        source = line[3:].strip()
        if not source:
            raise InvalidRule(f"{where}: 're:' needs a regular expression after it", rule=rule, phrase=number)
        try:
            pattern = re.compile(source)
        except re.error as exc:
            raise InvalidRule(f"{where}: not a valid regular expression: {exc}", rule=rule, phrase=number) from None
        if pattern.search(""):
            raise InvalidRule(f"{where}: the regular expression matches empty text", rule=rule, phrase=number)
        return pattern
    parts = line.lower().split()
    for part in parts:
        if not _PLAIN_WORD.match(part):
            raise InvalidRule(
                f"{where}: {part!r} is not a word (letters, digits, apostrophes, and '*' only at the end of a "
                "word; use 're:' for a regular expression)",
                rule=rule,
                phrase=number,
            )
    tokens = [p.strip("'") for p in parts]
    if not tokens or not all(t.rstrip("*") for t in tokens):
        raise InvalidRule(f"{where}: has no words", rule=rule, phrase=number)
    body = " ".join(re.escape(t[:-1]) + r"[\w']*" if t.endswith("*") else re.escape(t) for t in tokens)
    return re.compile(rf"(?<![\w']){body}(?![\w'])")


def compile_rule(
    *,
    name: str,
    phrases: str,
    match: str = MATCH_ANY,
    party: str = "any",
    window_start_s: float | None = None,
    window_end_s: float | None = None,
) -> CompiledRule:
    """The rule ready to match, or ``InvalidRule`` saying why it cannot be."""
    name = (name or "").strip()
    if not name:
        raise InvalidRule("a category rule needs a name")
    if match not in MATCHES:
        raise InvalidRule(f"rule {name!r}: match must be one of {', '.join(MATCHES)}, got {match!r}", rule=name)
    if party not in PARTIES:
        raise InvalidRule(f"rule {name!r}: party must be one of {', '.join(PARTIES)}, got {party!r}", rule=name)
    lines = [line.strip() for line in (phrases or "").splitlines() if line.strip()]
    if not lines:
        raise InvalidRule(f"rule {name!r}: give at least one phrase (one per line)", rule=name)
    if len(lines) > MAX_PHRASES:
        raise InvalidRule(f"rule {name!r}: at most {MAX_PHRASES} phrases, got {len(lines)}", rule=name)
    start = 0.0 if window_start_s is None else float(window_start_s)
    if start < 0:
        raise InvalidRule(f"rule {name!r}: the window cannot start before the call (got {start:g} s)", rule=name)
    if window_end_s is not None and float(window_end_s) <= start:
        raise InvalidRule(
            f"rule {name!r}: the window must end after it starts (got {start:g} s to {float(window_end_s):g} s)",
            rule=name,
        )
    patterns = tuple(_phrase_pattern(line, rule=name, number=i + 1) for i, line in enumerate(lines))
    words: tuple[re.Pattern, ...] = ()
    if match == MATCH_ALL:
        for i, line in enumerate(lines):
            if line.startswith("re:") or len(line.split()) != 1:
                raise InvalidRule(
                    f"rule {name!r}, phrase {i + 1} ({line[:60]!r}): a word set ('all') takes one word per line",
                    rule=name,
                    phrase=i + 1,
                )
        words, patterns = patterns, ()
    return CompiledRule(
        name=name,
        match=match,
        party=party,
        patterns=patterns,
        words=words,
        window_start_ms=round(start * 1000),
        window_end_ms=None if window_end_s is None else round(float(window_end_s) * 1000),
    )


@dataclass(frozen=True)
class Hit:
    """Where a rule matched: the words that matched and when (ms in the call)."""

    text: str
    at_ms: int


class Final:
    """One final, normalized for matching: its tokens and each token's time
    (ms in the call; from the word timings where the recognizer gave them,
    else the segment's start)."""

    def __init__(self, *, text: str, words: Sequence[Mapping[str, object]] = (), start_ms: int = 0) -> None:
        tokens: list[str] = []
        times: list[int] = []
        if words:
            for word in words:
                at = start_ms + round(float(word.get("start", 0.0)) * 1000)
                for token in normalize_tokens(str(word.get("w", ""))):
                    tokens.append(token)
                    times.append(at)
        if not tokens:
            tokens = normalize_tokens(text)
            times = [start_ms] * len(tokens)
        self.tokens, self.times = tokens, times
        self.text = " ".join(tokens)
        # Character offset -> token index, for placing a match in time.
        self._offsets: list[int] = []
        at = 0
        for token in tokens:
            self._offsets.append(at)
            at += len(token) + 1

    def time_at(self, offset: int) -> int:
        index = 0
        for i, start in enumerate(self._offsets):
            if start <= offset:
                index = i
            else:
                break
        return self.times[index] if self.times else 0


def find(rule: CompiledRule, final: Final) -> Hit | None:
    """The first place in ``final`` where the rule's phrases (or, for ``all``,
    its whole word set) are said within its window; None if nowhere. For an
    ``absent`` rule this finds what would make it *not* fire."""
    if not final.tokens:
        return None
    if rule.match == MATCH_ALL:
        in_window = " ".join(t for t, at in zip(final.tokens, final.times, strict=True) if rule.in_window(at))
        found = [p.search(in_window) for p in rule.words]
        if not all(found):
            return None
        last = max(final.times[i] for i, at in enumerate(final.times) if rule.in_window(at))
        return Hit(text=" ".join(m.group(0) for m in found), at_ms=last)
    best: Hit | None = None
    for pattern in rule.patterns:
        for m in pattern.finditer(final.text):
            at = final.time_at(m.start())
            if rule.in_window(at):
                if best is None or at < best.at_ms:
                    best = Hit(text=m.group(0), at_ms=at)
                break
    return best
