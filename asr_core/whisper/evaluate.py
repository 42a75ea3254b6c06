"""`python -m asr_core evaluate --backbone whisper-tiny|whisper-base`: the final pass alone.

Same JSON keys as the small model's evaluation (wer, cer, rtf, params, speakers, ...). RTF is
processing seconds / audio seconds on `threads` CPU threads for whole-segment transcription
(features, encoder, decoding, word timings), after one untimed warm-up utterance.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

import torch

from asr_core.audio import load_audio
from asr_core.manifest import read_manifest
from asr_core.metrics import char_errors, word_errors
from asr_core.whisper.recognizer import WhisperRecognizer


def evaluate_whisper(rec: WhisperRecognizer, manifest: str, split: str = "test", threads: int = 1, limit: int = 0,
                     word_timestamps: bool = True, progress=sys.stderr, speakers: str = "") -> dict:
    torch.set_num_threads(threads)
    utts = read_manifest(manifest, (split,), speakers)[: limit or None]
    if not utts:
        raise ValueError(f"{manifest}: no utterances in split {split!r}"
                         + (f" of speakers matching {speakers!r}" if speakers else ""))
    rec.transcribe(load_audio(utts[0].audio, 8000), 8000)      # warm-up, not timed
    per = defaultdict(lambda: [0, 0])
    werr = wn = cerr = cn = 0
    audio_s = proc_s = 0.0
    hyps = []
    for i, u in enumerate(utts):
        audio = load_audio(u.audio, 8000)          # telephone audio at its own rate; the recognizer resamples
        t0 = time.perf_counter()
        hyp = rec.transcribe(audio, 8000, word_timestamps=word_timestamps).text
        proc_s += time.perf_counter() - t0
        audio_s += audio.numel() / 8000
        e, n = word_errors(u.text, hyp)
        ce, c = char_errors(u.text, hyp)
        werr, wn, cerr, cn = werr + e, wn + n, cerr + ce, cn + c
        per[u.speaker][0] += e
        per[u.speaker][1] += n
        hyps.append({"speaker": u.speaker, "ref": u.text, "hyp": hyp})
        if (i + 1) % 20 == 0:
            print(f"evaluate: {i + 1}/{len(utts)} WER so far {werr / max(wn, 1):.3f} RTF {proc_s / audio_s:.3f}",
                  file=progress, flush=True)
    path = rec.meta.get("path")
    return {
        "wer": round(werr / max(wn, 1), 4),
        "cer": round(cerr / max(cn, 1), 4),
        "rtf": round(proc_s / max(audio_s, 1e-9), 4),
        "params": sum(p.numel() for p in rec.model.parameters()),
        "checkpoint_bytes": os.path.getsize(path) if path and os.path.exists(path) else None,
        "decoder": f"{rec.model.cfg.name} {'beam' + str(rec.options.beam_size) if rec.options.beam_size > 1 else 'greedy'}"
                   f"{'' if rec.int8 == 'off' else ' int8' if rec.int8 == 'all' else ' int8 decoder'}"
                   f"{f' trim {rec.trim_seconds:g}s' if rec.trim_seconds is not None else ''}"
                   f"{f' live margin {rec.live_margin_s:g}s' if rec.uses_live_margin else ''}"
                   f"{f' padding pooled by {rec.tail_pool}' if rec.uses_live_margin and rec.tail_pool > 1 else ''}",
        "backbone": rec.model.cfg.name,
        "chunk_ms": None,
        "split": split,
        "utterances": len(utts),
        "words": wn,
        "audio_seconds": round(audio_s, 1),
        "first_partial_ms_median": None,
        "speakers": {s: {"wer": round(e / max(n, 1), 4), "words": n} for s, (e, n) in sorted(per.items())},
        "hyps": hyps,
    }
