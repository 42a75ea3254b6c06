"""Hard telephone lines for evaluation: pass a manifest's audio through a named line.

    python -m asr_core phone-line --manifest data/real-dev/manifest.tsv --line hard --out data/real-dev-hard

writes `data/real-dev-hard/manifest.tsv` with the same speakers, splits and texts, and each
utterance's audio rendered through the line (8 kHz PCM16 WAV). Deterministic per line and
utterance (the noise is seeded by the line and the file name), so a figure can be reproduced.

Lines (band limits with sox's sinc filter, white-ish noise at an SNR against the speech's RMS,
then a codec round trip with sox):

| line   | band (Hz)  | SNR (dB) | level (dB) | codec |
|--------|------------|----------|------------|-------|
| ulaw   | 300-3400   | none     | 0          | G.711 mu-law |
| gsm    | 300-3400   | 20       | 0          | GSM 06.10 full rate |
| amr    | 300-3400   | 15       | -6         | AMR-NB 4.75 kbit/s (mode 0) |
| hard   | 300-3400   | 12       | 0          | GSM, then mu-law (a mobile caller reaching a G.711 trunk) |
| narrow | 500-2800   | 10       | -10        | AMR-NB 4.75 kbit/s, then mu-law |
"""
from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from asr_core.audio import load_audio
from asr_core.manifest import HEADER, read_manifest
from asr_core.errors import LineError  # noqa: F401  (raised here; importable from here)

SAMPLE_RATE = 8000


@dataclass(frozen=True)
class Line:
    band: tuple[int, int]
    snr_db: float | None          # None: no added noise
    level_db: float
    codecs: tuple[str, ...]       # applied in order: "ulaw", "gsm", "amr"


LINES = {
    "ulaw": Line((300, 3400), None, 0.0, ("ulaw",)),
    "gsm": Line((300, 3400), 20.0, 0.0, ("gsm",)),
    "amr": Line((300, 3400), 15.0, -6.0, ("amr",)),
    "hard": Line((300, 3400), 12.0, 0.0, ("gsm", "ulaw")),
    "narrow": Line((500, 2800), 10.0, -10.0, ("amr", "ulaw")),
}


def _sox(*args: str) -> None:
    p = subprocess.run(["sox", "-R", "-q", *args], capture_output=True, timeout=120)
    if p.returncode != 0:
        raise LineError(f"sox failed ({p.returncode}): {p.stderr.decode(errors='replace')[:300]}")


def render(x: np.ndarray, line: Line, seed: int) -> np.ndarray:
    """(samples,) float32 at 8 kHz -> the same speech as heard over `line` (8 kHz float32)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="asr-line-") as tmp:
        src, band = os.path.join(tmp, "src.wav"), os.path.join(tmp, "band.wav")
        sf.write(src, np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        _sox(src, "-b", "16", band, "sinc", f"{line.band[0]}-{line.band[1]}")
        y, _ = sf.read(band, dtype="float32")
        y = y * 10 ** (line.level_db / 20)
        if line.snr_db is not None:
            speech = y[np.abs(y) > 0.02 * (np.abs(y).max() + 1e-9)]
            rms = float(np.sqrt(np.mean(speech**2))) if speech.size else 1e-3
            noise = np.convolve(rng.standard_normal(y.size), np.ones(3) / 3, mode="same").astype(np.float32)
            y = y + noise * rms / (np.sqrt(np.mean(noise**2)) + 1e-9) * 10 ** (-line.snr_db / 20)
        current = os.path.join(tmp, "line.wav")
        sf.write(current, np.clip(y, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        for i, codec in enumerate(line.codecs):
            enc, dec = os.path.join(tmp, f"c{i}"), os.path.join(tmp, f"d{i}.wav")
            if codec == "ulaw":
                _sox(current, "-e", "u-law", "-b", "8", enc + ".wav")
                enc += ".wav"
            elif codec == "gsm":
                _sox(current, enc + ".gsm")
                enc += ".gsm"
            elif codec == "amr":
                _sox(current, "-C", "0", "-t", "amr-nb", enc + ".amr")
                enc += ".amr"
            else:
                raise LineError(f"unknown codec {codec!r}")
            _sox(enc, "-e", "signed-integer", "-b", "16", "-r", str(SAMPLE_RATE), dec)
            current = dec
        out, _ = sf.read(current, dtype="float32")
    return out.astype(np.float32)


def degrade_manifest(manifest: str, line_name: str, out_dir: str) -> str:
    """Render every utterance of `manifest` through the line; -> the new manifest's path."""
    if line_name not in LINES:
        raise LineError(f"unknown line {line_name!r}; one of {', '.join(LINES)}")
    line = LINES[line_name]
    rows = read_manifest(manifest)
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    out_path = os.path.join(out_dir, "manifest.tsv")
    with open(out_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        w.writerow(HEADER)
        for i, u in enumerate(rows):
            name = f"{i:05d}-{os.path.splitext(os.path.basename(u.audio))[0]}.wav"
            seed = int.from_bytes(hashlib.sha256(f"{line_name}/{name}".encode()).digest()[:4], "little")
            y = render(load_audio(u.audio, SAMPLE_RATE).numpy(), line, seed)
            sf.write(os.path.join(audio_dir, name), y, SAMPLE_RATE, subtype="PCM_16")
            w.writerow((u.speaker, u.split, os.path.join("audio", name), u.text))
    return out_path
