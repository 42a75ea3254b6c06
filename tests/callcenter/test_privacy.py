"""Card-number redaction: Luhn-valid digit runs, written or spoken."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from asr_core.text import digits_to_words
from callcenter.privacy import REDACTED, card_spans, luhn_valid, redact_text, redact_words


def _luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable")


card_numbers = st.builds(
    lambda length, seed: _luhn_complete("".join(random.Random(seed).choice("0123456789") for _ in range(length - 1))),
    st.integers(13, 19),
    st.integers(0, 10**9),
)


def test_luhn_check():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("41111x1111111111")


@given(card_numbers, st.sampled_from(["digits", "groups", "dashes", "spoken"]))
def test_every_luhn_valid_card_number_is_redacted_however_it_is_written(number, style):
    written = {
        "digits": number,
        "groups": " ".join(number[i : i + 4] for i in range(0, len(number), 4)),
        "dashes": "-".join(number[i : i + 4] for i in range(0, len(number), 4)),
        "spoken": digits_to_words(number),
    }[style]

    redacted = redact_text(f"my card number is {written} thank you")

    assert redacted == f"my card number is {REDACTED} thank you"


@given(st.integers(0, 10**9))
def test_a_number_that_fails_the_luhn_check_is_kept(seed):
    # 13 digits: the only stretch long enough for a card number is the whole run.
    number = _luhn_complete("".join(random.Random(seed).choice("0123456789") for _ in range(12)))
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    text = f"order {' '.join(wrong)} please"
    assert redact_text(text) == text


def test_short_numbers_and_spoken_oh_are_handled():
    assert redact_text("my order is four seven one one") == "my order is four seven one one"
    spoken = "four oh one two eight eight eight eight eight eight eight eight one eight eight one"
    assert luhn_valid("4012888888881881")
    assert redact_text(f"it is {spoken}") == f"it is {REDACTED}"
    assert card_spans("call me on five five five".split()) == []


def test_word_lists_merge_the_card_number_into_one_word_over_its_times():
    spoken = "four one one one one one one one one one one one one one one one".split()
    words = [{"w": "card", "start": 0.0, "end": 0.2, "conf": 0.9}] + [
        {"w": w, "start": 0.3 + i * 0.2, "end": 0.45 + i * 0.2, "conf": 0.8 - i * 0.01} for i, w in enumerate(spoken)
    ]

    out = redact_words(words)

    assert [w["w"] for w in out] == ["card", REDACTED]
    assert out[1]["start"] == words[1]["start"] and out[1]["end"] == words[-1]["end"]
    assert out[1]["conf"] == min(w["conf"] for w in words[1:])


def test_the_agents_feed_hides_card_numbers_in_finals_and_long_digit_runs_in_partials(settings):
    from callcenter.live import messages

    settings.PRIVACY_REDACT_CARD_NUMBERS = True
    spoken = "four one one one one one one one one one one one one one one one"
    growing = "my card is four one one one one one one one"  # 8 digits so far: cannot be checked yet
    words = [{"w": w, "start": i * 0.3, "end": i * 0.3 + 0.2, "conf": 0.9} for i, w in enumerate(growing.split())]

    partial = messages.partial_message(call_id=1, segment_id=2, index=0, text=growing, words=words, audio_at=1.0)
    final = messages.final_message(
        call_id=1, segment_id=2, index=0, text=f"my card is {spoken}", words=[], confidence=0.9,
        status="recognized", start_ms=0, end_ms=9000,
    )  # fmt: skip
    short = messages.partial_message(call_id=1, segment_id=2, index=0, text="order four seven", words=[], audio_at=1)

    assert partial["text"] == f"my card is {REDACTED}" and [w["w"] for w in partial["words"]][-1] == REDACTED
    assert final["text"] == f"my card is {REDACTED}"
    assert short["text"] == "order four seven"
    settings.PRIVACY_REDACT_CARD_NUMBERS = False
    assert messages.final_message(
        call_id=1, segment_id=2, index=0, text=spoken, words=[], confidence=0.9, status="recognized",
        start_ms=0, end_ms=9000,
    )["text"] == spoken  # fmt: skip
