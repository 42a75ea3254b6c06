"""How long does per-caller adaptation take, and how big is a profile? One thread, side by side.

    .venv/bin/python bench/adaptation_speed.py --manifest data/corpus/manifest.tsv --speakers '^testacc00(0[0-4])$'

Per test speaker, on its `adapt` utterances (the caller's audio), with the shipped checkpoint:
- fit: the meta-learned adaptation alone (`meta.adapt`, the checkpoint's steps) on all of them,
  supervised and label-free (label-free includes decoding its pseudo-labels);
- guarded: the product's whole `adapt_caller` (pseudo-labels, held-out chunks, refit);
- the profile's size in bytes (`Profile.to_bytes`, what the database stores).
Prints per-speaker rows and the medians, normalized to 30 s of audio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")

from asr_core.adaptation import AdaptationConfig, adapt_caller, adaptation_settings  # noqa: E402
from asr_core.audio import load_audio  # noqa: E402
from asr_core.manifest import read_manifest  # noqa: E402
from asr_core.meta import adapt, detached, initial_params, make_batch  # noqa: E402
from asr_core.profile import Profile  # noqa: E402
from asr_core.small.recognizer import Recognizer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--speakers", default="", help="regular expression over speaker ids (default: all)")
    ap.add_argument("--checkpoint", help="default: the shipped one")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of each fit (the fastest is kept)")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {a.repeat}")
    torch.set_num_threads(1)
    rec = Recognizer.load(a.checkpoint)
    rows = read_manifest(a.manifest, ("adapt",), a.speakers)
    speakers = sorted({u.speaker for u in rows})
    if not speakers:
        print("no speaker with adapt utterances selected", file=sys.stderr)
        return 2
    out = []
    print(f"{'speaker':12s} {'audio s':>8s} {'fit sup':>8s} {'fit lf':>8s} {'guarded sup':>12s} {'guarded lf':>11s} "
          f"{'profile B':>10s}")
    for spk in speakers:
        utts = [u for u in rows if u.speaker == spk]
        audios = [load_audio(u.audio, rec.sample_rate) for u in utts]
        texts = [u.text for u in utts]
        seconds = sum(x.numel() for x in audios) / rec.sample_rate
        fits = {}
        for mode in ("supervised", "label-free"):
            steps, sizes, init = adaptation_settings(rec, mode)
            best = float("inf")
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                labels = texts if mode == "supervised" else [rec.decode(rec.log_probs(x, initial_params(rec.model))).text
                                                            for x in audios]
                detached(adapt(rec.model, init, make_batch(rec.model, audios, labels), steps, sizes))
                best = min(best, time.perf_counter() - t0)
            fits[mode] = best
        t0 = time.perf_counter()
        sup = adapt_caller(rec, audios, texts, cfg=AdaptationConfig("supervised"))
        g_sup = time.perf_counter() - t0
        t0 = time.perf_counter()
        adapt_caller(rec, audios, None, cfg=AdaptationConfig("label-free"))
        g_lf = time.perf_counter() - t0
        size = len(Profile(rec.meta["sha256"], sup.params, metrics=sup.metrics).to_bytes())
        out.append((seconds, fits["supervised"], fits["label-free"], g_sup, g_lf, size))
        print(f"{spk:12s} {seconds:8.1f} {fits['supervised']:8.3f} {fits['label-free']:8.3f} {g_sup:12.3f} {g_lf:11.3f} "
              f"{size:10d}", flush=True)
    per30 = [[r[i] * 30.0 / r[0] for r in out] for i in range(1, 5)]
    print(f"\n{len(out)} speakers, median audio {statistics.median(r[0] for r in out):.1f} s; per 30 s of audio, median: "
          f"fit supervised {statistics.median(per30[0]):.3f} s, fit label-free {statistics.median(per30[1]):.3f} s, "
          f"guarded supervised {statistics.median(per30[2]):.3f} s, guarded label-free {statistics.median(per30[3]):.3f} s; "
          f"profile {max(r[5] for r in out)} bytes at most (limit {256 * 1024})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
