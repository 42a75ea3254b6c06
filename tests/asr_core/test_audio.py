import io
import wave

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings, strategies as st

from asr_core.audio import AudioError, load_audio, mulaw_decode, mulaw_encode, pcm16_decode, pcm16_encode, resample


@given(st.binary(max_size=4000))
def test_mulaw_decode_encode_is_identity_on_bytes(data):
    # every mu-law byte decodes to a value that encodes back to the same byte (0x7f/0xff: both zeros)
    again = mulaw_encode(mulaw_decode(data))
    canon = lambda b: bytes(0xFF if x == 0x7F else x for x in b)  # noqa: E731
    assert canon(again) == canon(data)


@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), max_size=2000))
def test_mulaw_error_is_bounded(xs):
    x = torch.tensor(xs, dtype=torch.float32)
    y = mulaw_decode(mulaw_encode(x))
    assert y.shape == x.shape
    # G.711 quantization: relative error of a few percent, absolute error tiny near zero
    assert torch.all((y - x).abs() <= 0.035 * x.abs() + 2e-3)


def test_mulaw_matches_g711_reference_values():
    # G.711 table: 0 -> 0xFF, full positive -> 0x80, full negative -> 0x00
    assert mulaw_encode(torch.tensor([0.0, 1.0, -1.0])) == bytes([0xFF, 0x80, 0x00])


@given(st.binary(max_size=4000).filter(lambda b: len(b) % 2 == 0))
def test_pcm16_round_trip_is_exact(data):
    assert pcm16_encode(pcm16_decode(data)) == data


def test_pcm16_odd_length_is_a_clear_error():
    with pytest.raises(AudioError, match="odd number of bytes"):
        pcm16_decode(b"\x00\x01\x02")


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_load_audio_downmixes_stereo_and_resamples():
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    x = load_audio(_wav_bytes(stereo.astype(np.float32), 16000), 8000)
    assert x.dim() == 1 and abs(x.numel() - 8000) <= 1
    assert 0.45 < float(x.abs().max()) < 0.55


@pytest.mark.parametrize("payload", [b"", b"RIFF\x00\x00", b"not audio at all" * 10])
def test_load_audio_rejects_corrupt_bytes(payload):
    with pytest.raises(AudioError, match="cannot decode audio"):
        load_audio(payload)


def test_load_audio_truncated_file(tmp_path):
    good = _wav_bytes(np.zeros(8000, dtype=np.float32), 8000)
    p = tmp_path / "cut.wav"
    p.write_bytes(good[:30])
    with pytest.raises(AudioError):
        load_audio(str(p))


def test_load_audio_missing_file():
    with pytest.raises(AudioError, match="not found"):
        load_audio("/no/such/file.wav")


def test_resample_rejects_nonpositive_rate():
    with pytest.raises(AudioError):
        resample(torch.zeros(10), 0, 8000)
