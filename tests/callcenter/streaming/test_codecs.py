"""The event loop's frame decoders give exactly asr_core's samples."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from asr_core.audio import mulaw_decode, pcm16_decode
from callcenter.streaming.codecs import mulaw_to_float, pcm16_to_float


@given(data=st.binary(max_size=4000))
def test_mulaw_frames_decode_exactly_as_asr_core_does(data):
    decoded = mulaw_to_float(data)

    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, mulaw_decode(data).numpy())


@given(data=st.binary(max_size=4000).map(lambda b: b[: len(b) // 2 * 2]))
def test_pcm16_frames_decode_exactly_as_asr_core_does(data):
    decoded = pcm16_to_float(data)

    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, pcm16_decode(data).numpy())
