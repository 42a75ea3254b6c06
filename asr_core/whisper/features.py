"""Whisper's log-mel frontend in torch, numerically the one faster-whisper uses.

16 kHz audio, 25 ms Hann window (n_fft 400), 10 ms hop, 80 Slaney mel bins, log10 clamped to
8 decades below the utterance's peak, scaled to about [-1, 1]. Telephone audio (8 kHz) is
resampled first; the mel bins above 4 kHz then hold only the floor, as for any narrow-band input.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

from asr_core.audio import AudioError, resample
from asr_core.whisper.model import HOP_LENGTH, N_FRAMES, SAMPLE_RATE

N_FFT = 400
_FILTERS: dict[int, Tensor] = {}


def mel_filters(n_mels: int = 80) -> Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalized mel filterbank (librosa's defaults, as Whisper)."""
    if n_mels not in _FILTERS:
        fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                norm="slaney", mel_scale="slaney")          # (freqs, n_mels)
        _FILTERS[n_mels] = fb.t().contiguous()
    return _FILTERS[n_mels]


def log_mel(audio: Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = 80) -> Tensor:
    """(samples,) float audio at `sample_rate` -> (n_mels, frames) log-mel, frames = samples // 160 at 16 kHz.

    As faster-whisper: 160 zero samples appended, centered STFT (reflect padding), last frame
    dropped twice (once by the STFT convention, once as `content_frames`).
    """
    if audio.dim() != 1:
        raise AudioError(f"expected (samples,) audio, got shape {tuple(audio.shape)}")
    x = resample(audio.float(), int(sample_rate), SAMPLE_RATE)
    if x.numel() < N_FFT // 2 + 1:
        raise AudioError(f"audio too short for Whisper: {x.numel()} samples at 16 kHz")
    x = torch.nn.functional.pad(x, (0, HOP_LENGTH))
    window = torch.hann_window(N_FFT, periodic=True)
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                      return_complex=True)                                   # (freqs, frames + 1)
    power = spec[:, :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power                                        # (n_mels, frames)
    logm = torch.clamp(mel, min=1e-10).log10()
    logm = torch.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0)[:, :-1]


def pad_or_trim(mel: Tensor, frames: int = N_FRAMES) -> Tensor:
    """(n_mels, T) -> (n_mels, frames): zero-padded (in the normalized log domain) or cut."""
    if mel.shape[-1] >= frames:
        return mel[..., :frames]
    return torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]))
