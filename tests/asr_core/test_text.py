from hypothesis import given, strategies as st

from asr_core.text import VOCAB, decode_ids, encode, normalize, number_to_words, ordinal_to_words


def test_normalize_speaks_digits_money_and_emails():
    assert normalize("I paid $25.50 on the 3rd!") == "i paid twenty five dollars and fifty cents on the third"
    assert normalize("Card 4111 1111 1111 1111") == "card four one one one one one one one one one one one one one one one"
    assert normalize("mail john.smith@example.com") == "mail john dot smith at example dot com"
    assert normalize("It's 100% DONE.") == "it's one hundred percent done"


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(342) == "three hundred forty two"
    assert number_to_words(2_000_013) == "two million thirteen"
    assert ordinal_to_words(21) == "twenty first"
    assert ordinal_to_words(30) == "thirtieth"


@given(st.text(max_size=200))
def test_normalize_output_uses_only_vocabulary_characters(s):
    out = normalize(s)
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz' ")
    assert "  " not in out and out == out.strip()


@given(st.text(max_size=100))
def test_encode_decode_round_trip(s):
    assert decode_ids(encode(s)) == normalize(s)
    assert all(0 < i < len(VOCAB) for i in encode(s))


def test_comma_grouped_numbers_are_cardinals():
    assert normalize("I paid $2,051 today") == "i paid two thousand fifty one dollars today"
    assert normalize("about 12,500 people") == "about twelve thousand five hundred people"
