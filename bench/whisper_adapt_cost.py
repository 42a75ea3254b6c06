"""Seconds of one caller's Whisper adaptation (the product's default: meta-learned rule, guarded,
the served window), one thread, with the fits in bfloat16 and in float32 side by side (bf16, fp32,
bf16 again: the machine's speed drifts; on a CPU without bfloat16 dot products, where the product
fits in float32 and bfloat16 would be emulated, float32 twice), supervised and label-free, then a returning
caller's run (from the profile, with the fits as this CPU runs them). Label-free starts, as the
product does, from the call's stored transcripts and their search scores (the recognizer's own,
made before the clock starts; the returning caller's with their profile). Prints figures; it is
not a test.

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
    p.add_argument("--modes", default="supervised,label-free", help="comma-separated: supervised, label-free")
    a = p.parse_args()
    modes = checked_modes(p, a.modes)
    import torch

    from asr_core import defaults
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
    # bfloat16 fits only where the CPU has bfloat16 dot products (elsewhere they are emulated: what
    # the product would never run); float32 twice there
    precisions = (True, False, True) if A._bf16_dot_products() else (False, False)
    print(f"this CPU {'has' if precisions[0] else 'lacks'} bfloat16 dot products: the product fits in "
          f"{'bfloat16' if A.FIT_BF16 else 'float32'}")
    finals = [rec.transcribe(x, 8000, word_timestamps=False) for x in audios] if "label-free" in modes else None
    stored = [t.text for t in finals] if finals else None
    scores = [t.avg_logprob for t in finals] if finals else None    # each final's search score, as stored
    for mode in modes:
        cfg = rec.adaptation_config(mode, len(audios))      # as the adaptation worker asks for it
        refs = texts if mode == "supervised" else None
        key = "wer" if mode == "supervised" else "divergence"
        for bf16 in precisions:
            A.FIT_BF16 = bf16
            A.forget_encoded()          # a first adaptation: the caller's audio is encoded
            r = rec.adapt(audios, refs, 8000, cfg=cfg, hypotheses=stored, hypothesis_scores=scores)
            m = r.metrics
            print(f"{mode:<10}  fits in {'bfloat16' if bf16 else 'float32 '}  {m['seconds']:.1f} s  "
                  f"(CPU {m['cpu_seconds']:.1f} s)  rule {m['rule']}  window {m['window']}  accepted {r.accepted}  "
                  f"held-out {key} {m.get(key + '_before')} -> {m.get(key + '_after')}")
        # a returning caller with a profile: the worker adapts once, from the profile (here the one
        # just made, or plain Whisper if it was rejected); their audio is new to it, so encoded again
        A.FIT_BF16 = A._bf16_dot_products()
        first = rec.adapt(audios, refs, 8000, cfg=cfg, hypotheses=stored, hypothesis_scores=scores)
        # their new call's finals, recognized with the profile (as the product stores them)
        again = [rec.transcribe(x, 8000, params=first.params, word_timestamps=False) for x in audios] \
            if finals else None
        A.forget_encoded()
        second = rec.adapt(audios, refs, 8000, cfg=cfg, start=first.params,
                           hypotheses=[t.text for t in again] if again else None,
                           hypothesis_scores=[t.avg_logprob for t in again] if again else None)
        print(f"{mode:<10}  returning caller, one try from the profile: {second.metrics['seconds']:.1f} s")
    return 0


def checked_modes(p: argparse.ArgumentParser, text: str) -> list[str]:
    """--modes: a comma-separated list of supervised and/or label-free (else the parser's error, exit 2)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("supervised", "label-free") for m in modes):
        p.error(f"--modes takes supervised and/or label-free, got {text!r}")
    return modes


if __name__ == "__main__":
    sys.exit(main())
