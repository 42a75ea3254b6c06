"""Per-caller adaptation of Whisper (the product's default recognizer) on real speech: every method
side by side, per speaker, guarded or not. Prints figures (and writes JSON); it is not a test.

    .venv/bin/python bench/whisper_adapt_sweep.py --manifest data/real-dev-hard/manifest.tsv --json out.json
    .venv/bin/python bench/whisper_adapt_sweep.py --manifest data/real-dev/manifest.tsv \
        --methods supervised,supervised_unguarded,supervised_lhuc,label-free,label-free_entropy

Per speaker: adapt on its `adapt` utterances (`asr_core.whisper.adapt.adapt_whisper_caller`, one
thread), WER on its `test` utterances recognized as the product does (the 30 s window with its live
margin, the default beam size and int8); seconds of adaptation per speaker. Label-free methods start from the
recognizer's own transcripts of the adapt utterances (what the product stored for the call;
their cost is reported apart as pseudo_label_seconds). Methods (name -> adapt_whisper_caller
arguments) are in METHODS: plain fine-tuning (Adam on the final norm's gain and bias), LHUC (the
gain alone), self-training on confident pseudo-labels, and SUTA-style entropy minimization.

--jitter K: each method's test WER also with K copies of its params moved by float rounding's size
(the served int8 decoder turns such a move into other words: up to 2.7 points on the hard line's
67 prompts); the copies' mean and range say which differences are the method's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = {
    "supervised": {"mode": "supervised"},
    "supervised_unguarded": {"mode": "supervised", "guard": False},
    "supervised_adam": {"mode": "supervised", "rule": "adam"},
    "supervised_adam_unguarded": {"mode": "supervised", "rule": "adam", "guard": False},
    "supervised_lhuc": {"mode": "supervised", "rule": "lhuc"},
    "supervised_lhuc_unguarded": {"mode": "supervised", "rule": "lhuc", "guard": False},
    "supervised_sgd_unguarded": {"mode": "supervised", "rule": "sgd", "lr": 1.0, "guard": False},
    "supervised_meta": {"mode": "supervised", "rule": "meta"},
    "supervised_meta_unguarded": {"mode": "supervised", "rule": "meta", "guard": False},
    "label-free": {"mode": "label-free"},
    "label-free_unguarded": {"mode": "label-free", "guard": False},
    "label-free_adam": {"mode": "label-free", "rule": "adam"},
    "label-free_adam_unguarded": {"mode": "label-free", "rule": "adam", "guard": False},
    "label-free_meta": {"mode": "label-free", "rule": "meta"},
    "label-free_meta_unguarded": {"mode": "label-free", "rule": "meta", "guard": False},
    "label-free_entropy": {"mode": "label-free", "objective": "entropy"},
    "label-free_entropy_unguarded": {"mode": "label-free", "objective": "entropy", "guard": False},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--methods", default="supervised,supervised_unguarded,supervised_lhuc,label-free,"
                   "label-free_unguarded,label-free_entropy")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps for every method (default: the product's)")
    p.add_argument("--speakers", default="")
    p.add_argument("--json")
    p.add_argument("--jitter", type=int, default=0,
                   help="also each method's test WER with this many copies of its params moved by float "
                        "rounding's size (how far a figure moves for reasons that are not the method)")
    p.add_argument("--float32-fits", action="store_true",
                   help="fit in float32 even where this CPU has bfloat16 dot products (as a CPU without them does)")
    a = p.parse_args()
    from asr_core.whisper import adapt
    from asr_core.whisper.adapt_eval import evaluate_whisper_adaptation
    from asr_core.whisper.recognizer import WhisperRecognizer
    from asr_core import defaults
    names = [m for m in a.methods.split(",") if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}: one of {', '.join(METHODS)}")
    if a.float32_fits:
        adapt.FIT_BF16 = False
    todo = {m: dict(METHODS[m], **({"steps": a.steps} if a.steps is not None else {})) for m in names}
    rec = WhisperRecognizer.load(defaults.FINAL_BACKBONE, quantize=defaults.WHISPER_INT8,
                                 beam_size=defaults.WHISPER_BEAM_SIZE, trim_seconds=defaults.WHISPER_TRIM_S,
                                 live_margin_s=defaults.WHISPER_LIVE_MARGIN_S, tail_pool=defaults.WHISPER_TAIL_POOL)
    if a.jitter < 0:
        p.error(f"--jitter must be 0 or more, got {a.jitter}")
    res = evaluate_whisper_adaptation(rec, a.manifest, "none", guard=True, methods=todo, speakers=a.speakers,
                                      jitter=a.jitter)
    base = res["none"]["wer"]
    for name, r in res.items():
        worst = max((v["wer"] - res["none"]["speakers"][s]["wer"] for s, v in r["speakers"].items()), default=0.0)
        acc = [v.get("accepted") for v in r["speakers"].values() if "accepted" in v]
        print(f"{name:30s} WER {r['wer']:.2%}  ({(r['wer'] - base) / max(base, 1e-9):+.1%} relative)  "
              f"worst speaker {worst * 100:+.2f} points  {r['seconds_per_speaker']:.1f} s/speaker"
              + (f"  accepted {sum(bool(x) for x in acc)}/{len(acc)}" if acc else ""))
        if "jitter" in r:
            j, j0 = r["jitter"], res["none"]["jitter"]
            print(f"{'':30s} jittered x{len(j['wer'])}: mean {j['mean']:.2%} ({(j['mean'] - j0['mean']) / max(j0['mean'], 1e-9):+.1%} "
                  f"relative to none's mean), {j['min']:.2%} to {j['max']:.2%}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
