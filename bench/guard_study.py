"""How well does each guard rule protect callers? One run, every rule, per speaker.

    .venv/bin/python bench/guard_study.py --manifest data/corpus/manifest.tsv --speakers 'test00(2[4-9]|[34])' \
        --mode supervised --json data/guard_small_sup.json
    .venv/bin/python bench/guard_study.py --backbone whisper-tiny --manifest data/wcorpus/manifest.tsv ...

Per test speaker (its `adapt` utterances are the caller's audio, its `test` utterances what the
caller says next), the script measures:
- test WER with the caller's current model (no profile) and with the profile adapted on all the
  `adapt` utterances (what the product stores when the guard accepts);
- the guard's evidence under several hold-out schemes: adapt on all but a held-out chunk of the
  `adapt` utterances, then compare before/after on that chunk (errors against the references or,
  label-free, against the pseudo-labels; mean confidence; words changed), for each chunk in turn.
Then every rule is applied to the same evidence: test WER of the callers as the rule leaves them,
the worst caller's change, and how many callers got more than 2 points worse. Rules are chosen on
these (tuning) speakers and reported on others.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch

sys.path.insert(0, ".")

from asr_core.adaptation import guard_chunks  # noqa: E402
from asr_core.audio import load_audio  # noqa: E402
from asr_core.manifest import read_manifest  # noqa: E402
from asr_core.metrics import word_errors  # noqa: E402


def load_backbone(name: str, mode: str, checkpoint: str | None = None):
    """-> (rec, transcribe(audio, params) -> Transcript, fit(audios, texts, start) -> params, start, baseline)"""
    from asr_core.meta import adapt, detached
    if name == "small":
        from asr_core.adaptation import adaptation_settings
        from asr_core.meta import initial_params, make_batch
        from asr_core.small.recognizer import Recognizer
        rec = Recognizer.load(checkpoint)
        steps, sizes, init = adaptation_settings(rec, mode)  # as the product adapts in this mode

        def fit(a, t, p, sizes=sizes):
            return detached(adapt(rec.model, p, make_batch(rec.model, a, t), steps, sizes))
        return rec, (lambda a, p: rec.decode(rec.log_probs(a, p))), fit, init, initial_params(rec.model)
    from asr_core.whisper.lora import (initial_lora_params, make_whisper_batch,
                                       plain_lora_params, step_settings, whisper_loss)
    from asr_core.whisper.recognizer import WhisperRecognizer
    rec = WhisperRecognizer.load(f"var/models/{name}.pt", quantize=True, trim_seconds=1.0,
                                 adaptation=f"asr_core/checkpoints/{name}-adapt.pt")
    steps, sizes = step_settings(rec)
    return rec, (lambda a, p: rec.transcribe(a, 8000, params=p)), \
        (lambda a, t, p: detached(adapt(rec.model, p, make_whisper_batch(rec, a, t, 8000), steps, sizes,
                                        loss=whisper_loss))), \
        initial_lora_params(rec), plain_lora_params(rec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--backbone", default="small")
    ap.add_argument("--checkpoint", help="small backbone: this checkpoint instead of the shipped one")
    ap.add_argument("--speakers", default="", help="regex on speaker ids (default: every test speaker)")
    ap.add_argument("--mode", choices=["supervised", "label-free"], default="supervised")
    ap.add_argument("--min-confidence", type=float,
                    help="label-free: pseudo-labels kept from this confidence (default: the product's, "
                         "0.75 small, 0.5 Whisper)")
    ap.add_argument("--judge", action="store_true",
                    help="also record the held-out hypotheses' distance to the small model's (an independent "
                         "first pass) before/after adaptation")
    ap.add_argument("--chunk-sizes", default="2,3", help="hold-out chunk sizes to measure (each costs n/size fits)")
    ap.add_argument("--json", required=True, help="per-speaker evidence, for further rules")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rec, transcribe, fit, start, baseline = load_backbone(a.backbone, a.mode, a.checkpoint)
    if a.min_confidence is not None:
        min_conf = a.min_confidence
    elif a.backbone == "small":
        from asr_core.adaptation import AdaptationConfig
        min_conf = AdaptationConfig.min_confidence
    else:
        from asr_core.whisper.adapt import LABEL_FREE_MIN_CONFIDENCE as min_conf
    judge = None
    if a.judge:
        from asr_core.small.recognizer import Recognizer
        small = Recognizer.load()
        judge = lambda x: small.transcribe(x, rec.sample_rate).text  # noqa: E731
    rows = read_manifest(a.manifest, ("adapt", "test"))
    speakers = sorted({u.speaker for u in rows if u.split == "test" and re.search(a.speakers, u.speaker)})
    out = []
    for si, spk in enumerate(speakers):
        t0 = time.perf_counter()
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        ad_audio = [load_audio(u.audio, rec.sample_rate) for u in ad]
        te_audio = [load_audio(u.audio, rec.sample_rate) for u in te]
        first = [transcribe(x, baseline) for x in ad_audio]
        if a.mode == "supervised":
            keep = list(range(len(ad)))
            texts = [u.text for u in ad]
        else:
            keep = [i for i, t in enumerate(first) if t.text and t.confidence >= min_conf]
            texts = [first[i].text for i in keep]
        audios = [ad_audio[i] for i in keep]
        before_held = [first[i] for i in keep]
        judged = [judge(x) for x in audios] if judge else []
        rec_ = {"speaker": spk, "utterances": len(audios)}
        if len(audios) >= 2:
            full = fit(audios, texts, start)
            te_before = [word_errors(u.text, transcribe(x, baseline).text) for u, x in zip(te, te_audio)]
            te_after = [word_errors(u.text, transcribe(x, full).text) for u, x in zip(te, te_audio)]
            words = sum(c[1] for c in te_before)
            rec_.update(test_words=words, test_before=sum(c[0] for c in te_before) / words,
                        test_after=sum(c[0] for c in te_after) / words)
            # hold-out chunks of `size` utterances from the end (the product holds out the last ones)
            n = len(audios)
            for size in [int(x) for x in a.chunk_sizes.split(",")]:
                folds = []
                for held in guard_chunks(n, size, n):
                    train = [i for i in range(n) if i not in held]
                    p = fit([audios[i] for i in train], [texts[i] for i in train], start)
                    after = [transcribe(audios[i], p) for i in held]
                    f = {"held": held, "words": 0, "err_before": 0, "err_after": 0, "changed": 0,
                         "conf_before": sum(before_held[i].confidence for i in held) / len(held),
                         "conf_after": sum(t.confidence for t in after) / len(held)}
                    for i, t in zip(held, after):
                        eb, nw = word_errors(texts[i], before_held[i].text)
                        ea, _ = word_errors(texts[i], t.text)
                        f["words"] += nw
                        f["err_before"] += eb
                        f["err_after"] += ea
                        f["changed"] += word_errors(before_held[i].text, t.text)[0]
                        if judge:
                            f["judge_before"] = f.get("judge_before", 0) + word_errors(judged[i], before_held[i].text)[0]
                            f["judge_after"] = f.get("judge_after", 0) + word_errors(judged[i], t.text)[0]
                    folds.append(f)
                rec_[f"folds{size}"] = folds
        out.append(rec_)
        print(f"{si + 1}/{len(speakers)} {spk} n={rec_['utterances']} "
              f"test {rec_.get('test_before', float('nan')):.3f} -> {rec_.get('test_after', float('nan')):.3f} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        with open(a.json, "w") as fh:
            json.dump({"backbone": a.backbone, "mode": a.mode, "speakers": out}, fh, indent=1)
    report(out)
    return 0


RULES = {
    # name: (chunk size, number of chunks used, decision on the pooled evidence)
    "none (always accept)": (0, 0, None),
    "1 chunk of 3, errors <=": (3, 1, "le"),
    "1 chunk of 3, errors <": (3, 1, "lt"),
    "3 chunks of 3, pooled errors <=": (3, 3, "le"),
    "3 chunks of 3, pooled errors <": (3, 3, "lt"),
    "3 chunks of 3, no chunk worse": (3, 3, "each"),
    "5 chunks of 2, pooled errors <=": (2, 5, "le"),
    "5 chunks of 2, pooled errors <": (2, 5, "lt"),
    "5 chunks of 2, no chunk worse": (2, 5, "each"),
    "1 chunk of 3, conf >=": (3, 1, "conf"),
    "3 chunks of 3, conf >=": (3, 3, "conf"),
    "3 chunks of 2, conf >=": (2, 3, "conf"),
    "3 chunks of 2, judge <": (2, 3, "judge"),
    "3 chunks of 2, judge < and conf >=": (2, 3, "judge+conf"),
    "3 chunks of 3, judge <": (3, 3, "judge"),
}


def decide(rec_: dict, size: int, count: int, how: str | None) -> bool:
    if how is None:
        return True
    folds = rec_.get(f"folds{size}", [])[:count]
    if not folds:
        return False
    eb, ea = sum(f["err_before"] for f in folds), sum(f["err_after"] for f in folds)
    if how == "le":
        return ea <= eb
    if how == "lt":
        return ea < eb
    if how == "each":
        return all(f["err_after"] <= f["err_before"] for f in folds) and ea < eb
    conf = sum(f["conf_after"] for f in folds) >= sum(f["conf_before"] for f in folds)
    if how == "conf":
        return conf
    if how.startswith("judge"):
        if "judge_before" not in folds[0]:
            return False
        judged = sum(f["judge_after"] for f in folds) < sum(f["judge_before"] for f in folds)
        return judged and (conf or how == "judge")
    raise ValueError(how)


def report(out: list[dict]) -> None:
    usable = [r for r in out if "test_before" in r]
    if not usable:
        print("no speaker had enough utterances to adapt on")
        return
    words = sum(r["test_words"] for r in usable)
    base = sum(r["test_before"] * r["test_words"] for r in usable) / max(words, 1)
    print(f"\n{len(usable)} speakers, no adaptation: WER {base:.2%}")
    print("| rule | WER | vs none | accepted | worst | callers > +2 pts |\n|---|---|---|---|---|---|")
    for name, (size, count, how) in RULES.items():
        if how is not None and not any(f"folds{size}" in r for r in usable):
            continue  # chunks of this size were not measured (--chunk-sizes)
        wers, deltas, acc = [], [], 0
        for r in usable:
            ok = decide(r, size, count, how)
            acc += ok
            w = r["test_after"] if ok else r["test_before"]
            wers.append(w * r["test_words"])
            deltas.append(w - r["test_before"])
        w = sum(wers) / max(words, 1)
        print(f"| {name} | {w:.2%} | {(w - base) / max(base, 1e-9):+.1%} | {acc}/{len(usable)} | "
              f"{max(deltas) * 100:+.1f} | {sum(d > 0.02 for d in deltas)} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(json.load(open(sys.argv[2]))["speakers"])
    else:
        sys.exit(main())
