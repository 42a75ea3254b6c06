"""The final pass on concurrent segments: batched (`transcribe_batch`: one encoder batch, every
segment's beams in one decoder batch) vs one by one, with the product's default recognizer, one
thread, side by side in one run. Prints figures; it is not a test.

    .venv/bin/python bench/whisper_batching.py --manifest data/real-dev/manifest.tsv --segments 16 --batch 4

Reports the real-time factor of each way, the speed-up, and whether the transcripts are the same.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    import torch

    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.manifest import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.segments < 1 or a.batch < 1 or a.repeats < 1:
        ap.error("--segments, --batch and --repeats must be >= 1")
    torch.set_num_threads(1)
    rec = load_engine(defaults.FINAL_BACKBONE)
    audios = [load_audio(u.audio, 8000) for u in read_manifest(a.manifest, ("test",))[: a.segments]]
    seconds = sum(x.numel() for x in audios) / 8000
    rec.transcribe(audios[0], 8000)   # warm-up
    for r in range(a.repeats):
        t0 = time.perf_counter()
        alone = [rec.transcribe(x, 8000).text for x in audios]
        t1 = time.perf_counter()
        batched = []
        for i in range(0, len(audios), a.batch):
            batched += [t.text for t in rec.transcribe_batch(audios[i:i + a.batch], 8000)]
        t2 = time.perf_counter()
        same = sum(x == y for x, y in zip(alone, batched))
        print(f"repeat {r + 1}: {len(audios)} segments, {seconds:.1f} s of audio, {rec.backbone} "
              f"{'beam' + str(rec.options.beam_size) if rec.options.beam_size > 1 else 'greedy'}: "
              f"one by one RTF {(t1 - t0) / seconds:.3f}, batches of {a.batch} RTF {(t2 - t1) / seconds:.3f} "
              f"(x{(t1 - t0) / max(t2 - t1, 1e-9):.2f}); same transcripts {same}/{len(audios)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
