"""The recognizer the product uses by default, in one place.

The backend's settings (``ASR_FINAL_BACKBONE``, ``ASR_PARTIAL_BACKBONE``, ``ASR_WHISPER_INT8``,
``ASR_WHISPER_BEAM_SIZE``, ``ASR_WHISPER_TRIM_S``) default to these values, and
``python -m asr_core evaluate`` without ``--backbone`` evaluates exactly this, so a figure measured
with the CLI is the product's.

Chosen on real speech (a real speaker's telephone prompts, clean and through a hard phone line;
``bench/real_speech_settings.py``, table in docs/recognizer.md): Whisper tiny, int8 linear layers in
the decoder only (the encoder stays float32), beam 5, the full 30 s window: 4.2 % WER clean and
25.1 % on the hard line at RTF 0.21 on one thread, where faster-whisper tiny (int8, beam 5) gives
3.8 % and 27.2 % at RTF 0.21, and all-float32 3.2 % / 25.4 % at RTF 0.31 (the same run). int8 in
the encoder loses on the hard line (31.7 %), greedy decoding stops long prompts early, and trimming
the window (``ASR_WHISPER_TRIM_S=8``: RTF 0.10, 5.5 % / 25.3 %) drops or invents words at the
edges. The small streaming model trained on synthesized voices gives 93 % WER on the same real
speaker and is not on the default path. Live partials decode greedily with int8 on the segment
plus 2 s (`WhisperStream`).
"""
from __future__ import annotations

BACKBONES = ("small", "whisper-tiny", "whisper-base")

FINAL_BACKBONE = "whisper-tiny"      # each segment's stored text
PARTIAL_BACKBONE = "whisper-tiny"    # live partials (re-decoded with local agreement)
INT8_MODES = ("off", "decoder", "all")   # int8 linear layers: none, the decoder's, all
WHISPER_INT8 = "decoder"
WHISPER_BEAM_SIZE = 5
WHISPER_TRIM_S: float | None = None  # None: the decoder sees the full 30 s window, as Whisper was trained
# In that window the encoder computes the segment plus this much of the padding; the rest of the
# window is the padding's own encoding, made once (None: the whole window computed each time).
WHISPER_LIVE_MARGIN_S: float | None = 1.0
