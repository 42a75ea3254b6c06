"""`python -m asr_core evaluate`: WER/CER overall and per speaker, real-time factor, model size.

The JSON written with --json is a stable interface other tools read:
  {"wer": 0.12, "cer": 0.05, "rtf": 0.02, "params": 4100000,
   "speakers": {"<speaker>": {"wer": 0.1, "words": 123}}, ...}
WER is a fraction over all test words; reference and hypothesis are normalized
the same way (lower case, digits as words, punctuation dropped).
RTF is measured on one CPU thread for streaming decoding: the audio is fed in
`chunk_ms` chunks through `RecognizerStream`, then finished with the beam search.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

import torch

from asr_core.adaptation import AdaptationConfig, adapt_caller, finetune, step_settings
from asr_core.audio import load_audio
from asr_core.checkpoint import state_sha256
from asr_core.manifest import read_manifest, speakers_with_tests
from asr_core.meta import adapt, adaptation_init, detached, initial_params, make_batch
from asr_core.metrics import char_errors, word_errors
from asr_core.small.recognizer import Recognizer


def stream_transcribe(rec: Recognizer, audio: torch.Tensor, chunk_ms: int = 200) -> tuple[str, float]:
    """Final text of a streamed utterance and the seconds it took, plus first-partial latency in meta."""
    n = max(1, rec.sample_rate * chunk_ms // 1000)
    t0 = time.perf_counter()
    s = rec.stream(rec.sample_rate)
    for i in range(0, audio.numel(), n):
        s.accept(audio[i:i + n])
    text = s.finish().text
    return text, time.perf_counter() - t0


def first_partial_audio_ms(rec: Recognizer, audio: torch.Tensor, chunk_ms: int = 20) -> float | None:
    """Milliseconds of audio fed before the first non-empty partial, minus the speech onset
    (first chunk whose energy exceeds 1 % of the utterance peak): the look-ahead the model needs."""
    n = max(1, rec.sample_rate * chunk_ms // 1000)
    peak = float(audio.abs().max()) or 1.0
    onset = None
    s = rec.stream(rec.sample_rate)
    for i in range(0, audio.numel(), n):
        chunk = audio[i:i + n]
        if onset is None and float(chunk.abs().max()) > 0.1 * peak:
            onset = i
        if s.accept(chunk).text and onset is not None:
            return (i + chunk.numel() - onset) * 1000.0 / rec.sample_rate
    return None


def evaluate(rec: Recognizer, manifest: str, split: str = "test", threads: int = 1, limit: int = 0,
             chunk_ms: int = 200, progress=sys.stderr, speakers: str = "") -> dict:
    torch.set_num_threads(threads)
    utts = read_manifest(manifest, (split,), speakers)
    if limit:
        utts = utts[:limit]
    if not utts:
        raise ValueError(f"{manifest}: no utterances in split {split!r}"
                         + (f" of speakers matching {speakers!r}" if speakers else ""))
    per = defaultdict(lambda: [0, 0])
    werr = wn = cerr = cn = 0
    audio_s = proc_s = 0.0
    latencies = []
    for i, u in enumerate(utts):
        audio = load_audio(u.audio, rec.sample_rate)
        hyp, sec = stream_transcribe(rec, audio, chunk_ms)
        audio_s, proc_s = audio_s + audio.numel() / rec.sample_rate, proc_s + sec
        e, n = word_errors(u.text, hyp)
        ce, cnum = char_errors(u.text, hyp)
        werr, wn, cerr, cn = werr + e, wn + n, cerr + ce, cn + cnum
        per[u.speaker][0] += e
        per[u.speaker][1] += n
        if i < 20:
            lat = first_partial_audio_ms(rec, audio)
            if lat is not None:
                latencies.append(lat)
        if (i + 1) % 50 == 0:
            print(f"evaluate: {i + 1}/{len(utts)} WER so far {werr / max(wn, 1):.3f}", file=progress, flush=True)
    ckpt = rec.meta.get("path")
    return {
        "wer": round(werr / max(wn, 1), 4),
        "cer": round(cerr / max(cn, 1), 4),
        "rtf": round(proc_s / max(audio_s, 1e-9), 4),
        "params": sum(p.numel() for p in rec.model.parameters()),
        "checkpoint_bytes": os.path.getsize(ckpt) if ckpt and os.path.exists(ckpt) else None,
        "decoder": "beam+lm" if rec.beam is not None else "greedy",
        "chunk_ms": chunk_ms,
        "split": split,
        "utterances": len(utts),
        "words": wn,
        "audio_seconds": round(audio_s, 1),
        "first_partial_ms_median": sorted(latencies)[len(latencies) // 2] if latencies else None,
        "speakers": {s: {"wer": round(e / max(n, 1), 4), "words": n} for s, (e, n) in sorted(per.items())},
    }


ADAPT_METHODS = ("none", "finetune", "lhuc", "maml", "fomaml", "reptile", "metasgd", "label-free", "supervised")


def evaluate_adaptation(rec: Recognizer, manifest: str, methods: list[str], meta: dict[str, Recognizer],
                        base: Recognizer, threads: int = 1, max_speakers: int = 0, progress=sys.stderr,
                        finetune_lr: float = 0.05, speakers: str = "") -> dict:
    """Per test speaker: adapt on its `adapt` utterances, WER on its `test` utterances, per method.

    rec: the shipped (meta-learned) recognizer; meta: algo -> recognizer with that algorithm's
    meta-learned init and step sizes; base: the recognizer before meta-learning (for the
    non-meta baselines finetune and lhuc). Same number of steps for every method. Methods adapt
    different models (the shipped one, the pre-meta-learning base, each algorithm's checkpoint), so
    each row also has `wer_unadapted`: the WER of its own model before adaptation. finetune: Adam
    at `finetune_lr` on the product's adaptive group (adapters included, added to `base` when
    `rec` has them); lhuc: plain gradient steps on `base`'s own group with the default step sizes.
    """
    if finetune_lr <= 0:
        raise ValueError(f"finetune_lr must be > 0, got {finetune_lr}")
    torch.set_num_threads(threads)
    rows = read_manifest(manifest, ("adapt", "test"), speakers)
    speakers = speakers_with_tests(rows, manifest, max_speakers)
    steps, _ = step_settings(rec)
    tuned = _finetune_model(rec, base)
    results = {m: {"errors": 0, "words": 0, "seconds": 0.0, "speakers": {}, "before": 0} for m in methods}
    weights: dict[int, str] = {}  # id(recognizer) -> hash of its weights (several methods share a model)

    for si, spk in enumerate(speakers):
        unadapted: dict[str, tuple[int, int]] = {}  # weights hash -> errors of that model with no adaptation
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        ad_audio = [load_audio(u.audio, rec.sample_rate) for u in ad]
        te_audio = [load_audio(u.audio, rec.sample_rate) for u in te]
        for m in methods:
            t0 = time.perf_counter()
            r, params = _adapted(m, rec, tuned, base, meta, ad, ad_audio, steps, finetune_lr)
            sec = time.perf_counter() - t0 if m != "none" else 0.0
            e, n = _test_errors(r, params, te, te_audio)
            # the same model before adaptation: each method is compared with its own starting model
            key = weights.setdefault(id(r), state_sha256(dict(r.model.state_dict())))
            if key not in unadapted:
                unadapted[key] = (e, n) if m == "none" else _test_errors(r, initial_params(r.model), te, te_audio)
            res = results[m]
            res["errors"], res["words"], res["seconds"] = res["errors"] + e, res["words"] + n, res["seconds"] + sec
            res["before"] += unadapted[key][0]
            res["speakers"][spk] = {"wer": round(e / max(n, 1), 4), "words": n,
                                    "wer_unadapted": round(unadapted[key][0] / max(n, 1), 4)}
        print(f"adapt-eval: {si + 1}/{len(speakers)} speakers  " + "  ".join(
            f"{m} {results[m]['errors'] / max(results[m]['words'], 1):.3f}" for m in methods), file=progress, flush=True)
    return {m: {"wer": round(r["errors"] / max(r["words"], 1), 4),
                "wer_unadapted": round(r["before"] / max(r["words"], 1), 4),
                "seconds_per_speaker": round(r["seconds"] / max(len(speakers), 1), 3),
                "speakers": r["speakers"]} for m, r in results.items()}


def _finetune_model(rec: Recognizer, base: Recognizer) -> Recognizer:
    """The model finetune adapts: `base`, with the same adapters as the product's `rec` when it has them
    (finetune adapts the product's own group)."""
    rank = rec.model.cfg.adapter_rank
    if rank and not base.model.cfg.adapter_rank:
        seed = int((rec.meta.get("meta_train") or {}).get("seed", 0))
        return Recognizer(base.model.with_adapters(rank, seed=seed), base.meta, base.beam)
    return base


def _adapted(m: str, rec: Recognizer, tuned: Recognizer, base: Recognizer, meta: dict[str, Recognizer],
             ad: list, ad_audio: list, steps: int, finetune_lr: float) -> tuple[Recognizer, dict]:
    """(the recognizer method `m` adapts, its parameters after adapting on one speaker's `ad` utterances)."""
    r = rec
    if m == "none":
        params = initial_params(rec.model)
    elif m == "finetune":
        r = tuned
        params = finetune(tuned, initial_params(tuned.model), ad_audio, [u.text for u in ad], steps,
                          lr=finetune_lr)
    elif m == "lhuc":
        r = base
        _, size = step_settings(base)
        params = detached(adapt(base.model, initial_params(base.model),
                                make_batch(base.model, ad_audio, [u.text for u in ad]), steps, size))
    elif m in meta:
        r = meta[m]
        s, sizes = step_settings(r)
        params = detached(adapt(r.model, adaptation_init(r.model, r.meta),
                                make_batch(r.model, ad_audio, [u.text for u in ad]), s, sizes))
    elif m == "supervised":
        params = adapt_caller(rec, ad_audio, [u.text for u in ad], cfg=AdaptationConfig("supervised")).params
    elif m == "label-free":
        params = adapt_caller(rec, ad_audio, None, cfg=AdaptationConfig("label-free")).params
    else:
        raise ValueError(f"no checkpoint for method {m!r}")
    return r, params


def _test_errors(r: Recognizer, params: dict, te: list, te_audio: list) -> tuple[int, int]:
    """(word errors, words) of `r` with `params` on one speaker's test utterances."""
    e = n = 0
    for u, a in zip(te, te_audio):
        ue, un = word_errors(u.text, r.decode(r.log_probs(a, params)).text)
        e, n = e + ue, n + un
    return e, n
