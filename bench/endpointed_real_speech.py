"""WER of finals as the live product stores them: each real-speech prompt of a manifest's ``test``
split is put between line noise (1 s before, 1.5 s after), cut by the product's endpointer
(callcenter/streaming/endpointer.py) and each segment recognized alone by the default final
recognizer, on one thread. ``--tails``: the silence each segment keeps after its speech
(``EndpointerConfig.tail_ms``; the product keeps 300 ms). A shorter tail would let a speculative
final start earlier in the pause (callcenter/streaming/speculation.py); this measures what it
costs in words. Prints figures; it is not a test.

    .venv/bin/python bench/endpointed_real_speech.py --manifest data/real-dev/manifest.tsv \\
        --manifest data/real-dev-hard/manifest.tsv --tails 300,200,100
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", required=True, help="a manifest with a `test` split (repeatable)")
    p.add_argument("--tails", default="300", help="comma-separated tail_ms values (default 300)")
    a = p.parse_args()
    try:
        tails = [int(t) for t in a.tails.split(",") if t.strip()]
    except ValueError:
        p.error(f"--tails takes comma-separated whole milliseconds, got {a.tails!r}")
    if not tails or any(not 0 <= t <= 600 for t in tails):
        p.error(f"--tails must be 0-600 ms (the hangover is 600 ms), got {a.tails!r}")
    import numpy as np
    import torch

    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.errors import ManifestError
    from asr_core.manifest import read_manifest
    from asr_core.metrics import wer
    from callcenter.streaming.endpointer import Endpointer, EndpointerConfig, SegmentEnded

    torch.set_num_threads(1)
    rec = load_engine(defaults.FINAL_BACKBONE)
    for manifest in a.manifest:
        try:
            rows = read_manifest(manifest, ("test",))
        except ManifestError as e:
            p.error(str(e))
        rng = np.random.default_rng(0)

        def noise(n: int):
            return (rng.normal(size=n) * 3e-4).astype(np.float32)

        calls = [np.concatenate([noise(8000), load_audio(u.audio, 8000).numpy(), noise(12000)]) for u in rows]
        for tail in tails:
            pairs, segments, t0 = [], 0, time.perf_counter()
            for u, audio in zip(rows, calls):
                ep = Endpointer(EndpointerConfig(tail_ms=tail))
                ended = [e for e in ep.push(audio) + ep.flush() if isinstance(e, SegmentEnded)]
                segments += len(ended)
                texts = [rec.transcribe(torch.from_numpy(e.audio), 8000, word_timestamps=False).text for e in ended]
                pairs.append((u.text, " ".join(texts)))
            print(f"{manifest}  tail {tail} ms  WER {100 * wer(pairs):.2f} %  ({len(rows)} prompts, {segments} "
                  f"segments, {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
