"""Speech synthesis (espeak-ng, flite, festival) and the telephone channel (sox).

`render(speaker, text, seed)` returns 8 kHz mono float32 audio in [-1, 1]:
synthesize -> perturb (formant scaling, pitch) -> band-pass + 8 kHz -> gain,
line noise -> codec round trip (mu-law, GSM, AMR-NB) -> decoded PCM.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from asr_core.corpus.speakers import Speaker
from asr_core.errors import SynthesisError  # noqa: F401  (raised here; importable from here)

SAMPLE_RATE = 8000


def check_tools(engines: set[str]) -> None:
    need = {"sox"} | {{"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}[e] for e in engines}
    missing = sorted(t for t in need if shutil.which(t) is None)
    if missing:
        raise SynthesisError(
            f"missing programs {missing}: install Debian packages espeak-ng flite festival "
            "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-all")


def _run(cmd: list[str], stdin: bytes | None = None) -> None:
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')[:300]}")


def _synthesize(sp: Speaker, text: str, out: str, tmp: str) -> None:
    if sp.engine == "espeak":
        _run(["espeak-ng", "-v", sp.voice, "-s", str(int(sp.rate)), "-p", str(sp.pitch), "-w", out, text])
    elif sp.engine == "flite":
        _run(["flite", "-voice", sp.voice, "--setf", f"duration_stretch={sp.rate}", "-t", text, "-o", out])
    elif sp.engine == "festival":
        txt = os.path.join(tmp, "in.txt")
        with open(txt, "w") as f:
            f.write(text)
        _run(["text2wave", "-eval", f"(voice_{sp.voice})", "-eval",
              f"(Parameter.set 'Duration_Stretch {sp.rate})", txt, "-o", out])
    else:
        raise SynthesisError(f"unknown engine {sp.engine!r}")


def _perturb_and_band(sp: Speaker, src: str, dst: str) -> None:
    # formant (vocal tract) scaling: speed by a, restore duration and pitch
    a = sp.formant
    cents = sp.pitch_cents - 1200.0 * math.log2(a)
    effects = ["speed", f"{a:.4f}", "tempo", "-s", f"{1.0 / a:.4f}", "pitch", f"{cents:.0f}",
               "rate", "-v", "16000", "sinc", f"{sp.band_low}-{sp.band_high}", "rate", "-v", str(SAMPLE_RATE)]
    _run(["sox", "-R", "-q", src, "-c", "1", "-b", "16", dst, *effects])


def _codec_roundtrip(sp: Speaker, src: str, dst: str, tmp: str) -> None:
    if sp.codec == "none":
        shutil.copyfile(src, dst)
        return
    if sp.codec == "ulaw":
        enc = os.path.join(tmp, "c.wav")
        _run(["sox", "-R", "-q", src, "-e", "u-law", "-b", "8", enc])
    elif sp.codec == "gsm":
        enc = os.path.join(tmp, "c.gsm")
        _run(["sox", "-R", "-q", src, enc])
    elif sp.codec == "amr":
        enc = os.path.join(tmp, "c.amr")
        _run(["sox", "-R", "-q", src, "-C", str(sp.amr_mode), "-t", "amr-nb", enc])
    else:
        raise SynthesisError(f"unknown codec {sp.codec!r}")
    _run(["sox", "-R", "-q", enc, "-e", "signed-integer", "-b", "16", "-r", str(SAMPLE_RATE), dst])


def render(sp: Speaker, text: str, seed: int) -> np.ndarray:
    """(samples,) float32 at 8 kHz: `text` spoken by `sp` over its phone line."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="asr-synth-") as tmp:
        raw, band, line, coded = (os.path.join(tmp, n) for n in ("raw.wav", "band.wav", "line.wav", "coded.wav"))
        _synthesize(sp, text, raw, tmp)
        _perturb_and_band(sp, raw, band)
        x, sr = sf.read(band, dtype="float32")
        if x.size == 0:
            raise SynthesisError(f"{sp.engine} produced no audio for {text!r}")
        # leading/trailing silence, like an endpointed segment with some margin
        pad = lambda n: np.zeros(n, dtype=np.float32)  # noqa: E731
        x = np.concatenate([pad(int(rng.integers(400, 2400))), x, pad(int(rng.integers(400, 2400)))])
        x = x / (np.abs(x).max() + 1e-6) * 0.5 * 10 ** (sp.gain_db / 20)
        speech_rms = float(np.sqrt(np.mean(x**2))) + 1e-8
        noise = rng.standard_normal(x.size).astype(np.float32)
        noise = np.convolve(noise, np.ones(3, dtype=np.float32) / 3, mode="same")  # a little colour
        noise *= speech_rms / (np.sqrt(np.mean(noise**2)) + 1e-8) * 10 ** (-sp.snr_db / 20)
        x = np.clip(x + noise, -1.0, 1.0)
        sf.write(line, x, SAMPLE_RATE, subtype="PCM_16")
        _codec_roundtrip(sp, line, coded, tmp)
        y, _ = sf.read(coded, dtype="float32")
    return y.astype(np.float32)
