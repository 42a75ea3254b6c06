"""The shipped checkpoint, as a user of asr_core meets it."""
import random
import time

import pytest
import torch

from asr_core.corpus.sentences import sentences
from asr_core.corpus.synth import render
from asr_core.metrics import wer


def test_shipped_checkpoint_loads_fast_and_is_small(recognizer):
    import os
    from asr_core.small.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    t0 = time.perf_counter()
    load_checkpoint(DEFAULT_CHECKPOINT)
    assert time.perf_counter() - t0 < 5.0          # target 1 s; generous bound on a busy CI machine
    assert os.path.getsize(DEFAULT_CHECKPOINT) < 20 * 2**20


def test_transcribes_fresh_sentences_from_an_unseen_voice(recognizer, unseen_speaker):
    texts = sentences(random.Random(2024), 6)
    pairs = [(t, recognizer.transcribe(torch.from_numpy(render(unseen_speaker, t, seed=i)), 8000).text)
             for i, t in enumerate(texts)]
    assert wer(pairs) < 0.35, pairs


def test_streaming_final_equals_whole_utterance_transcript(recognizer, unseen_speaker):
    audio = torch.from_numpy(render(unseen_speaker, "i would like to cancel my premium plan", seed=3))
    whole = recognizer.transcribe(audio, 8000)
    s = recognizer.stream(8000)
    partials = [s.accept(audio[i:i + 1600]).text for i in range(0, audio.numel(), 1600)]
    final = s.finish()
    assert final.text == whole.text
    assert any(partials), "partial hypotheses appear while audio streams in"
    assert [w.w for w in final.words] == final.text.split()
    assert all(0.0 <= w.conf <= 1.0 and w.start < w.end for w in final.words)


def test_words_have_increasing_timestamps_within_the_audio(recognizer, unseen_speaker):
    audio = torch.from_numpy(render(unseen_speaker, "my account number is four five six seven", seed=4))
    t = recognizer.transcribe(audio, 8000)
    starts = [w.start for w in t.words]
    assert starts == sorted(starts) and t.words[-1].end <= audio.numel() / 8000 + 0.1


def test_16k_stereo_input_is_resampled(recognizer, unseen_speaker):
    import torchaudio.functional as AF
    audio = torch.from_numpy(render(unseen_speaker, "yes that is correct", seed=5))
    a16 = AF.resample(audio, 8000, 16000)
    t8 = recognizer.transcribe(audio, 8000).text
    t16 = recognizer.transcribe(torch.stack([a16, a16]), 16000).text
    assert wer([(t8, t16)]) <= 0.5


@pytest.mark.parametrize("audio", [torch.zeros(0), torch.zeros(100), torch.zeros(16000)])
def test_empty_and_silent_audio_give_empty_or_short_text(recognizer, audio):
    assert len(recognizer.transcribe(audio, 8000).text.split()) <= 1


def test_clipped_and_nan_audio_do_not_crash(recognizer, unseen_speaker):
    audio = torch.from_numpy(render(unseen_speaker, "please transfer me to billing", seed=6))
    clipped = torch.clamp(audio * 50, -1, 1)
    assert isinstance(recognizer.transcribe(clipped, 8000).text, str)
    audio[100:200] = float("nan")
    assert isinstance(recognizer.transcribe(audio, 8000).text, str)


def test_bad_arguments_are_clear_errors(recognizer):
    from asr_core.audio import AudioError
    with pytest.raises(AudioError, match="sample_rate is required"):
        recognizer.transcribe(torch.zeros(100))
    with pytest.raises(AudioError, match="expected"):
        recognizer.transcribe(torch.zeros(2, 2, 2), 8000)
    with pytest.raises(AudioError, match="positive"):
        recognizer.transcribe(torch.zeros(100), -5)


def test_hotwords_boost_a_phrase_without_breaking_output(recognizer, unseen_speaker):
    audio = torch.from_numpy(render(unseen_speaker, "i want to upgrade to the family plan", seed=7))
    plain = recognizer.transcribe(audio, 8000).text
    boosted = recognizer.transcribe(audio, 8000, hotwords=["family plan", "!!!"]).text
    assert "family plan" in boosted or "family plan" not in plain
