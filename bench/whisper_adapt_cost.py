"""Seconds of one caller's supervised Whisper adaptation (the product's default: meta-learned rule,
guarded, the served window), one thread, with the fits in bfloat16 and in float32 side by side
(bf16, fp32, bf16 again: the machine's speed drifts). Prints figures; it is not a test.

    .venv/bin/python bench/whisper_adapt_cost.py --manifest data/real-dev-hard/manifest.tsv
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="its `adapt` utterances are one caller's audio and texts")
    a = p.parse_args()
    import torch

    from asr_core import defaults
    from asr_core.adaptation import AdaptationConfig
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.manifest import read_manifest
    from asr_core.whisper import adapt as A
    torch.set_num_threads(1)
    rec = load_engine(defaults.FINAL_BACKBONE)       # the product's recognizer, with its settings
    from asr_core.errors import ManifestError
    try:
        rows = read_manifest(a.manifest, ("adapt",))
    except ManifestError as e:
        p.error(str(e))
    if not rows:
        p.error(f"{a.manifest} has no `adapt` utterances")
    audios, texts = [load_audio(u.audio, 8000) for u in rows], [u.text for u in rows]
    # what a warm worker has already paid once: the padding's encoding, the optimizer's first import
    rec.padding_context()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    print(f"{len(rows)} utterances, {sum(x.numel() for x in audios) / 8000:.1f} s of audio")
    for bf16 in (True, False, True):
        A.FIT_BF16 = bf16
        r = A.adapt_whisper_caller(rec, audios, texts, 8000, cfg=AdaptationConfig("supervised"))
        m = r.metrics
        print(f"fits in {'bfloat16' if bf16 else 'float32 '}  {m['seconds']:.1f} s  (CPU {m['cpu_seconds']:.1f} s)  "
              f"rule {m['rule']}  window {m['window']}  accepted {r.accepted}  "
              f"held-out WER {m.get('wer_before')} -> {m.get('wer_after')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
