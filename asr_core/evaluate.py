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

from asr_core.audio import load_audio
from asr_core.manifest import read_manifest
from asr_core.metrics import char_errors, word_errors
from asr_core.recognizer import Recognizer


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
             progress=sys.stderr) -> dict:
    torch.set_num_threads(threads)
    utts = read_manifest(manifest, (split,))
    if limit:
        utts = utts[:limit]
    if not utts:
        raise ValueError(f"{manifest}: no utterances in split {split!r}")
    per = defaultdict(lambda: [0, 0])
    werr = wn = cerr = cn = 0
    audio_s = proc_s = 0.0
    latencies = []
    for i, u in enumerate(utts):
        audio = load_audio(u.audio, rec.sample_rate)
        hyp, sec = stream_transcribe(rec, audio)
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
        "split": split,
        "utterances": len(utts),
        "words": wn,
        "audio_seconds": round(audio_s, 1),
        "first_partial_ms_median": sorted(latencies)[len(latencies) // 2] if latencies else None,
        "speakers": {s: {"wer": round(e / max(n, 1), 4), "words": n} for s, (e, n) in sorted(per.items())},
    }
