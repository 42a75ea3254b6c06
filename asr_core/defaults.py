"""The recognizer the product uses by default, in one place.

The backend's settings (``ASR_FINAL_BACKBONE``, ``ASR_PARTIAL_BACKBONE``, ``ASR_WHISPER_INT8``,
``ASR_WHISPER_BEAM_SIZE``, ``ASR_WHISPER_TRIM_S``) default to these values, and
``python -m asr_core evaluate`` without ``--backbone`` evaluates exactly this, so a figure measured
with the CLI is the product's.

Chosen on real speech (a real speaker's telephone prompts, clean and through a hard phone line;
``bench/real_speech_settings.py``, table in the README): Whisper tiny, float32, beam 5, the full
30 s window: 3.2 % WER clean and 25.4 % on the hard line, where faster-whisper tiny (int8, beam 5)
gives 3.2 % and 30.1 %. int8 and greedy decoding are faster but lose on the hard line (31.7 %,
33.9 %); trimming the window loses words at the end. The small streaming model trained on
synthesized voices gives 93 % WER on the same real speaker and is not on the default path. Live
partials decode greedily with int8 on the segment plus 2 s (`WhisperStream`).
"""
from __future__ import annotations

BACKBONES = ("small", "whisper-tiny", "whisper-base")

FINAL_BACKBONE = "whisper-tiny"      # each segment's stored text
PARTIAL_BACKBONE = "whisper-tiny"    # live partials (re-decoded with local agreement)
WHISPER_INT8 = False
WHISPER_BEAM_SIZE = 5
WHISPER_TRIM_S: float | None = None  # None: the encoder sees the full 30 s window, as Whisper was trained
