"""Whisper final pass: concurrent segments batched (`transcribe_batch`, 4 at a time) vs one by one,
int8, encoder trimmed to the segment + 1 s, one thread. Prints figures; it is not a test.

    .venv/bin/python bench/whisper_batching.py --manifest data/wcorpus/manifest.tsv --segments 16
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    import torch

    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.whisper.recognizer import WhisperRecognizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rec = WhisperRecognizer.load("whisper-tiny", quantize=True, trim_seconds=1.0)
    audios = [load_audio(u.audio, 8000) for u in read_manifest(a.manifest, ("test",))[: a.segments]]
    seconds = sum(x.numel() for x in audios) / 8000
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for x in audios:
            rec.transcribe(x, 8000)
        t1 = time.perf_counter()
        for i in range(0, len(audios), a.batch):
            rec.transcribe_batch(audios[i:i + a.batch], 8000)
        t2 = time.perf_counter()
        print(f"{len(audios)} segments, {seconds:.1f} s of audio: one by one RTF {(t1 - t0) / seconds:.3f}, "
              f"batches of {a.batch} RTF {(t2 - t1) / seconds:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
