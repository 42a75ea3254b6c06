"""Fixtures for asr_core tests: the shipped recognizer (loaded once) and synthesized speech."""
from __future__ import annotations

import random
import shutil

import pytest

from asr_core.small.checkpoint import DEFAULT_CHECKPOINT


@pytest.fixture(scope="session")
def recognizer():
    from asr_core.small.recognizer import Recognizer
    return Recognizer.load(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="session")
def unseen_speaker():
    """A caller whose voice variant and line settings never occur in training."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are required (make test installs them)")
    from asr_core.corpus.speakers import Speaker
    return Speaker(id="unseen", split="test", engine="espeak", voice="en-us+m6", rate=160.0, pitch=45,
                   formant=1.05, pitch_cents=-80, codec="ulaw", amr_mode=0, snr_db=25.0, gain_db=-3.0,
                   band_low=300, band_high=3400)


@pytest.fixture
def rng():
    return random.Random(7)
