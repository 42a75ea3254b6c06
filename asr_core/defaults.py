"""The recognizer the product uses by default, in one place.

The backend's settings (``ASR_FINAL_BACKBONE``, ``ASR_PARTIAL_BACKBONE``, ``ASR_WHISPER_INT8``,
``ASR_WHISPER_BEAM_SIZE``, ``ASR_WHISPER_TRIM_S``, ``ASR_WHISPER_LIVE_MARGIN_S``) default to these values, and
``python -m asr_core evaluate`` without ``--backbone`` evaluates exactly this, so a figure measured
with the CLI is the product's.

Chosen on real speech (a real speaker's telephone prompts, clean and through a hard phone line;
``bench/real_speech_settings.py``, table in docs/recognizer.md): Whisper tiny, int8 linear layers in
the decoder only (the encoder stays float32), beam 5, the full 30 s window of which the encoder
computes the segment plus a 1 s live margin (the rest is the cached encoding of pure padding):
4.3 % WER clean and 25.6 % on the hard line at RTF 0.09 on one thread, where computing the whole
window gives 4.2 % / 25.1 % at RTF 0.23-0.24 and faster-whisper tiny (int8, beam 5) 4.0 % / 28.4 %
at RTF 0.25-0.26 (one run, 2026-12-03; an earlier run on a slower moment of the machine: 0.17, 0.34
and 0.39-0.43). All-float32 was 3.2 % / 25.4 % at 1.4x the cost of the int8
decoder; int8 in the encoder loses on the hard line (31.7 %); greedy decoding stops long prompts
early; trimming the window (``ASR_WHISPER_TRIM_S=8``: 5.5 % / 25.3 %, no faster than the live
margin) drops or invents words at the edges. The small streaming model trained on synthesized
voices gives 93 % WER on the same real speaker and is not on the default path. Live partials
decode greedily with int8 on the segment plus 2 s (`WhisperStream`; the live margin's window makes
greedy partials worse: last partial 10.5 % vs 5.5 % clean). The partials' encoder runs in bfloat16
where the CPU multiplies bfloat16 with AMX tiles, else in int8 (`PARTIAL_ENCODER`).
"""
from __future__ import annotations

BACKBONES = ("small", "whisper-tiny", "whisper-base")

FINAL_BACKBONE = "whisper-tiny"      # each segment's stored text
PARTIAL_BACKBONE = "whisper-tiny"    # live partials (re-decoded with local agreement)
# The live partials' Whisper encoder (their decoder is int8): "int8" (dynamic quantization),
# "bfloat16" (autocast), "float32", or "auto": bfloat16 where the CPU has AMX tiles (Intel Xeon 4th
# generation and later), int8 elsewhere. On a 2-core Xeon with AMX, 10 concurrent streams of the
# real-speech development prompts (bench/partials_real_speech.py --batch 10 --encoder; docs/recognizer.md):
# last-partial WER int8 -> bfloat16: clean 4.82 % -> 3.82 %, hard line 34.05 % -> 31.06 %, AMR line
# 31.89 % -> 30.23 %, at 107 / 96 / 121 and 92 / 86 / 111 ms per partial (before the half-second
# windows, `WhisperStream.PARTIAL_WIDTH_STEP`, which cost bfloat16 4 words: clean 4.49 %, hard
# 31.73 %). Without bfloat16 hardware it is emulated (slower than float32); a float32 encoder
# costs 1.5x int8's time (the same Xeon). With AVX-512 bfloat16 but no AMX (AMD EPYC) bfloat16 was
# 0-25 % slower per partial than int8 (hard line 35.71 % -> 32.89 %, clean 4.65 % -> 4.82 %), so
# auto keeps int8 there.
PARTIAL_ENCODERS = ("auto", "int8", "bfloat16", "float32")
PARTIAL_ENCODER = "auto"
INT8_MODES = ("off", "decoder", "all")   # int8 linear layers: none, the decoder's, all
WHISPER_INT8 = "decoder"
WHISPER_BEAM_SIZE = 5
WHISPER_TRIM_S: float | None = None  # None: the decoder sees the full 30 s window, as Whisper was trained
# In that window the encoder computes the segment plus this much of the padding; the rest of the
# window is the padding's own encoding, made once (None: the whole window computed each time).
WHISPER_LIVE_MARGIN_S: float | None = 1.0
# With the live margin, the padding after it is pooled in blocks of this many encoder positions
# (20 ms each): the encoder's attention and the decoder's cross-attention see each block as one
# key weighing as the block (1: every position; bench/real_speech_settings.py --tail-pool).
WHISPER_TAIL_POOL = 5
TAIL_POOLS = tuple(n for n in range(1, 51) if 1500 % n == 0)   # the valid block sizes: whole blocks of the window
