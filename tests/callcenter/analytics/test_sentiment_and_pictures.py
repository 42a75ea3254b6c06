"""Sentiment with VADER, and the admin's pictures of a call."""

from __future__ import annotations

import re

from callcenter.analytics import pictures, sentiment


def test_vader_scores_an_angry_and_a_happy_sentence_apart():
    angry = sentiment.score("This is terrible, I am very angry and I want to cancel")
    happy = sentiment.score("Thank you so much, that is great, you were very helpful")
    assert angry < -0.5 and happy > 0.5
    assert sentiment.label(angry) == "negative" and sentiment.label(happy) == "positive"
    assert sentiment.score("") is None and sentiment.score("...") is None and sentiment.label(None) == "none"


def test_a_party_s_sentiment_weighs_its_segments_by_words():
    assert sentiment.weighted_mean([(0.8, 1), (-0.4, 3)]) == round((0.8 - 1.2) / 4, 4)
    assert sentiment.weighted_mean([(None, 4)]) is None


def test_the_talk_bar_shares_add_up_to_the_call_and_labels_are_escaped():
    svg = pictures.talk_bar(talk_ms={"customer": 6000, "agent": 5300}, silence_ms=4500, overlap_ms=800,
                            duration_ms=15000)  # fmt: skip
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="0" width="([\d.]+)"', svg)]
    assert len(widths) == 4 and abs(sum(widths) - pictures.WIDTH) < 0.5
    assert "both at once: 0.8 s" in svg and svg.startswith("<svg")


def test_the_timeline_draws_each_turn_silence_and_overlap():
    svg = pictures.timeline(speech={"customer": [[4000, 9000]], "agent": [[500, 3000], [8200, 11000]]},
                            silences=[[0, 500]], overlaps=[[8200, 9000]], duration_ms=15000)  # fmt: skip
    assert svg.count(pictures.COLOURS["agent"]) == 2 and svg.count(pictures.COLOURS["overlap"]) == 1
    assert "overlap 8.2 s–9.0 s (0.8 s)" in svg and ">10s<" in svg
