"""What trimming the encoder's window does to real speech: each `test` prompt recognized with the
product's decoding over the full 30 s window and over the segment plus `--trim-seconds`, side by
side; prints the prompts whose word errors differ, and the totals. One thread.

    .venv/bin/python bench/window_diff.py --manifest data/real-dev/manifest.tsv --trim-seconds 8
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from asr_core import defaults  # noqa: E402
from asr_core.audio import load_audio  # noqa: E402
from asr_core.manifest import read_manifest  # noqa: E402
from asr_core.metrics import word_errors  # noqa: E402
from asr_core.whisper.recognizer import WhisperRecognizer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--trim-seconds", type=float, default=8.0)
    a = ap.parse_args()
    if not 0 <= a.trim_seconds <= 30:
        ap.error("--trim-seconds must be in [0, 30]")
    torch.set_num_threads(1)
    load = dict(quantize=defaults.WHISPER_INT8, beam_size=defaults.WHISPER_BEAM_SIZE)
    full = WhisperRecognizer.load(defaults.FINAL_BACKBONE, **load)
    trimmed = WhisperRecognizer.load(defaults.FINAL_BACKBONE, trim_seconds=a.trim_seconds, **load)
    totals = [0, 0, 0]
    for u in read_manifest(a.manifest, ("test",)):
        audio = load_audio(u.audio, 8000)
        f, t = full.transcribe(audio, 8000).text, trimmed.transcribe(audio, 8000).text
        (ef, n), (et, _) = word_errors(u.text, f), word_errors(u.text, t)
        totals = [totals[0] + ef, totals[1] + et, totals[2] + n]
        if ef != et:
            print(f"{audio.numel() / 8000:5.1f} s  errors full {ef}, trimmed {et}\n  reference {u.text}\n"
                  f"  full      {f}\n  trimmed   {t}")
    print(f"word errors over {totals[2]} words: full window {totals[0]}, trim {a.trim_seconds:g} s {totals[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
