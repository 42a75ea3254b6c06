"""Category rules: what compiles, what matches, and the errors for what does not."""

from __future__ import annotations

import pytest

from callcenter.analytics.rules import Final, InvalidRule, compile_rule, find


def words(*spec):
    return [{"w": w, "start": s, "end": s + 0.3, "conf": 0.9} for w, s in spec]


def test_a_phrase_matches_whole_words_ignoring_case_and_punctuation():
    rule = compile_rule(name="cancel", phrases="cancel my account\nclose my account", party="customer")
    hit = find(rule, Final(text="I want to Cancel my account!", start_ms=2000))
    assert hit is not None and hit.text == "cancel my account" and hit.at_ms == 2000
    assert find(rule, Final(text="I'd like to cancel my accounts", start_ms=0)) is None
    assert find(rule, Final(text="uncancel my account", start_ms=0)) is None
    assert rule.applies_to("customer") and not rule.applies_to("agent")


def test_a_prefix_word_and_a_regular_expression():
    rule = compile_rule(name="refund", phrases="refund*\nre:money (back|returned)")
    assert find(rule, Final(text="were you refunded", start_ms=0)).text == "refunded"
    assert find(rule, Final(text="I want my money back", start_ms=0)).text == "money back"
    assert find(rule, Final(text="a fund", start_ms=0)) is None


def test_a_word_set_needs_every_word_in_one_final_in_any_order():
    rule = compile_rule(name="legal", phrases="lawyer\nsue", match="all")
    assert find(rule, Final(text="I will sue you, my lawyer says so", start_ms=0)) is not None
    assert find(rule, Final(text="my lawyer is on holiday", start_ms=0)) is None


def test_the_window_places_each_word_by_its_timing():
    rule = compile_rule(name="greeting", phrases="thank you for calling", party="agent", window_end_s=10)
    early = Final(text="", words=words(("Thank", 1.0), ("you", 1.3), ("for", 1.5), ("calling", 1.7)), start_ms=8000)
    late = Final(text="", words=words(("Thank", 3.0), ("you", 3.3), ("for", 3.5), ("calling", 3.7)), start_ms=8000)
    assert find(rule, early).at_ms == 9000
    assert find(rule, late) is None  # said at 11 s, after the window


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"phrases": ""}, "at least one phrase"),
        ({"phrases": "re:(unclosed"}, "not a valid regular expression"),
        ({"phrases": "re:"}, "needs a regular expression"),
        ({"phrases": "re:x*"}, "matches empty text"),
        ({"phrases": "can*cel"}, "is not a word"),
        ({"phrases": "hello, world"}, "is not a word"),
        ({"phrases": "*"}, "is not a word"),
        ({"phrases": "two words", "match": "all"}, "one word per line"),
        ({"phrases": "x", "window_start_s": 10, "window_end_s": 5}, "must end after it starts"),
        ({"phrases": "x", "window_start_s": -1}, "cannot start before the call"),
        ({"phrases": "x", "match": "sometimes"}, "match must be one of"),
        ({"phrases": "x", "party": "caller"}, "party must be one of"),
        ({"phrases": "x", "name": " "}, "needs a name"),
    ],
)
def test_a_rule_that_does_not_compile_says_why(kwargs, says):
    with pytest.raises(InvalidRule, match=says) as error:
        compile_rule(**{"name": "r", **kwargs})
    assert error.value.code == "invalid_rule"
