"""A returning caller's second adaptation, offline, three ways side by side: the caller's first
call (the first half of each speaker's `adapt` utterances) makes a profile as the product does
(no profile yet: one guarded adaptation); then the second adaptation, on both calls' utterances:

- ``both``: the worker until 2026-12-06 (two tries: from the meta-learned start and from the
  profile; the guard's held-out figures pick one, `adaptation_run.choose`);
- ``restart``: one try from the meta-learned start (label-free: plain Whisper), judged by the
  guard against the profile (`adapt_whisper_caller(restart=True)`);
- ``continue``: one try from the profile (the worker since 2026-12-06).

Each outcome's WER on the speaker's `test` utterances (recognized as the product does), with the
first call's profile and with no profile beside them, and the seconds of the second adaptation.
Stored transcripts (label-free pseudo-labels) are the recognizer's, the second call's made with
the first call's profile where it was accepted. One thread. Prints figures; it is not a test.

    .venv/bin/python bench/whisper_returning.py --manifest data/real-dev-hard/manifest.tsv --modes supervised,label-free
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from whisper_adapt_cost import checked_modes  # noqa: E402 - the bench folder is on the path from here

WAYS = ("both", "restart", "continue")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--modes", default="supervised,label-free", help="comma-separated: supervised, label-free")
    p.add_argument("--speakers", default="", help="comma-separated speaker ids (default: every speaker with tests)")
    a = p.parse_args()
    modes = checked_modes(p, a.modes)
    import torch

    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.errors import ManifestError
    from asr_core.manifest import read_manifest, speakers_with_tests
    from asr_core.metrics import word_errors
    from asr_core.whisper import adapt as A
    from asr_core.whisper import cached
    torch.set_num_threads(1)
    rec = load_engine(defaults.FINAL_BACKBONE)
    try:
        rows = read_manifest(a.manifest, ("adapt", "test"), a.speakers)
        speakers = speakers_with_tests(rows, a.manifest, 0)
    except (ManifestError, ValueError) as e:     # ValueError: no selected speaker has test utterances
        p.error(str(e))
    rec.padding_context()

    def decoded(cache, params, n):
        hyps = cached.decode_cached(rec, cache, params, beam_size=rec.options.beam_size)
        return [rec.tokenizer.decode(hyps[i].tokens).strip() for i in range(n)]

    totals = {m: {k: [0, 0] for k in ("none", "first", *WAYS)} for m in modes}
    seconds = {m: {w: [] for w in WAYS} for m in modes}
    for spk in speakers:
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        if len(ad) < 4:
            continue
        audios, texts = [load_audio(u.audio, 8000) for u in ad], [u.text for u in ad]
        half = len(ad) // 2
        test_cache = cached.encode_frozen(rec, [load_audio(u.audio, 8000) for u in te], 8000, None, as_served=True)
        ad_cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)

        def wer_of(params):
            hyps = decoded(test_cache, params, len(te))
            counts = [word_errors(u.text, h) for u, h in zip(te, hyps)]
            return sum(c[0] for c in counts), sum(c[1] for c in counts)

        for mode in modes:
            sup = mode == "supervised"
            cfg = rec.adaptation_config(mode, len(ad))
            first_stored = None if sup else decoded(ad_cache, None, len(ad))[:half]
            A.forget_encoded()
            first = rec.adapt(audios[:half], texts[:half] if sup else None, 8000, cfg=cfg, hypotheses=first_stored)
            profile = first.params if first.accepted else None
            stored = None if sup else first_stored + decoded(ad_cache, profile, len(ad))[half:]
            refs = texts if sup else None
            outcome: dict[str, tuple] = {}
            if profile is None:      # no profile: the second adaptation is a first one, the same every way
                t0 = time.perf_counter()
                r = rec.adapt(audios, refs, 8000, cfg=cfg, hypotheses=stored)
                s = time.perf_counter() - t0
                outcome = {w: (r.params if r.accepted else None, s, "init" if r.accepted else "-") for w in WAYS}
            else:
                A.forget_encoded()
                t0 = time.perf_counter()
                tried = {"init": rec.adapt(audios, refs, 8000, cfg=cfg, hypotheses=stored)}
                t1 = time.perf_counter()
                tried["current"] = rec.adapt(audios, refs, 8000, cfg=cfg, hypotheses=stored, start=profile)
                t2 = time.perf_counter()
                name, chosen = choose(tried)
                outcome["both"] = (chosen.params if chosen.accepted else profile, t2 - t0,
                                   name if chosen.accepted else "-")
                c = tried["current"]
                outcome["continue"] = (c.params if c.accepted else profile, t2 - t1, "current" if c.accepted else "-")
                A.forget_encoded()
                t0 = time.perf_counter()
                r = A.adapt_whisper_caller(rec, audios, refs, 8000, cfg=cfg, hypotheses=stored, start=profile,
                                           restart=True)
                outcome["restart"] = (r.params, time.perf_counter() - t0, "init" if r.accepted else "-")
            figures = {"none": wer_of(None), "first": wer_of(profile)}
            for w in WAYS:
                figures[w] = wer_of(outcome[w][0])
                seconds[mode][w].append(outcome[w][1])
            for k, (e, n) in figures.items():
                totals[mode][k][0] += e
                totals[mode][k][1] += n
            print(f"{spk}  {mode:<10}  first call's profile {'accepted' if profile is not None else 'rejected'}  "
                  + "  ".join(f"{k} {e / max(n, 1):.4f}" for k, (e, n) in figures.items()) + "  |  "
                  + "  ".join(f"{w}: {outcome[w][2]} {outcome[w][1]:.1f} s" for w in WAYS), flush=True)
    for mode in modes:
        t = totals[mode]
        print(f"TOTAL {mode:<10}  " + "  ".join(f"{k} {e / max(n, 1):.4f}" for k, (e, n) in t.items())
              + "  |  seconds mean " + "  ".join(f"{w} {sum(s) / max(len(s), 1):.1f}" for w, s in seconds[mode].items()))
    return 0


def choose(tried: dict):
    """`callcenter.calls.services.adaptation_run.choose` (the worker's pick among its tries), with
    Django set up (its module imports the models; nothing here touches the database)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callcenter.settings")
    import django
    django.setup()
    from callcenter.calls.services.adaptation_run import choose as product_choose
    return product_choose(tried)


if __name__ == "__main__":
    sys.exit(main())
