"""Audio I/O and codecs on explicit sample rates.

Everything returns float32 tensors in [-1, 1], shape (samples,), mono.
Bad input (missing, empty, corrupt, truncated files, unsupported rates)
raises `AudioError` with a readable message.
"""
from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_core.errors import AudioError  # noqa: F401  (raised here; importable from here)

MAX_SECONDS = 3600.0


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return audio
    if audio.shape[-1] == 0:       # no samples: none at the new rate either (torchaudio cannot reshape nothing)
        return audio.new_zeros(*audio.shape[:-1], 0)
    return AF.resample(audio, orig_sr, new_sr)


def load_audio(source: str | bytes, sample_rate: int = 8000) -> torch.Tensor:
    """Decode a WAV/FLAC/OGG file (path or bytes), downmix to mono, resample. (samples,) float32."""
    if isinstance(source, str) and not os.path.isfile(source):
        raise AudioError(f"audio file not found: {source}")
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                           dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        name = source if isinstance(source, str) else f"<{len(source)} bytes>"
        raise AudioError(f"cannot decode audio {name}: {e}") from None
    if data.size and data.shape[0] / sr > MAX_SECONDS:
        raise AudioError(f"audio longer than {MAX_SECONDS:.0f} s")
    x = np.nan_to_num(_to_mono(np.asarray(data, dtype=np.float32)), nan=0.0, posinf=1.0, neginf=-1.0)
    return resample(torch.from_numpy(np.ascontiguousarray(x)), int(sr), sample_rate)


def pcm16_decode(frame: bytes) -> torch.Tensor:
    """Little-endian signed 16-bit PCM bytes -> (samples,) float32."""
    if len(frame) % 2:
        raise AudioError(f"PCM16 frame has an odd number of bytes ({len(frame)})")
    return torch.from_numpy(np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0)


def pcm16_encode(audio: torch.Tensor) -> bytes:
    x = torch.clamp(audio, -1.0, 1.0 - 1.0 / 32768.0)
    return (x * 32768.0).round().to(torch.int16).numpy().astype("<i2").tobytes()


# G.711 mu-law (as telephony and Twilio use it), exact table-free implementation
_BIAS, _CLIP = 0x84, 32635


def mulaw_encode(audio: torch.Tensor) -> bytes:
    """(samples,) float32 -> G.711 mu-law bytes."""
    pcm = (torch.clamp(audio, -1.0, 1.0 - 1.0 / 32768.0) * 32768.0).round().to(torch.int32)
    sign = (pcm < 0).to(torch.int32) * 0x80
    mag = torch.clamp(pcm.abs(), max=_CLIP) + _BIAS
    exponent = torch.clamp(torch.floor(torch.log2(mag.to(torch.float64))).to(torch.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    byte = (~(sign | (exponent << 4) | mantissa)) & 0xFF
    return byte.to(torch.uint8).numpy().tobytes()


def mulaw_decode(data: bytes) -> torch.Tensor:
    """G.711 mu-law bytes -> (samples,) float32."""
    u = (~torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int32))) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    pcm = torch.where(sign != 0, -mag, mag)
    return pcm.to(torch.float32) / 32768.0
