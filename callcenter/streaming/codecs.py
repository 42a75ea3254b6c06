"""Frame decoding on the event loop's hot path (50 frames per second per call).

asr_core's codecs work on torch tensors, which costs a few hundred
microseconds per 20 ms frame in fixed overhead; these numpy versions give
the same samples (the mu-law table is built from asr_core's decoder) in a
few microseconds.
"""

from __future__ import annotations

import numpy as np

from callcenter.asr import mulaw_decode

# G.711 mu-law byte -> float sample, exactly as asr_core decodes it.
_MULAW_TABLE = mulaw_decode(bytes(range(256))).numpy().astype(np.float32)


def mulaw_to_float(data: bytes) -> np.ndarray:
    """mu-law bytes -> (samples,) float32 in [-1, 1]."""
    return _MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_float(data: bytes) -> np.ndarray:
    """PCM16 little-endian bytes (an even number) -> (samples,) float32 in [-1, 1]."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
