"""`python -m asr_core tune-decoder`: pick the LM weight and word score on the dev split.

Log-probabilities are computed once per utterance; each grid point decodes them
again. The best values are written into the checkpoint's meta (not hashed: the
model version does not change), where `Recognizer.load` reads them.
"""
from __future__ import annotations

import itertools
import os
import sys

import torch

from asr_core.audio import load_audio
from asr_core.small.checkpoint import load_checkpoint
from asr_core.small.decoder import BeamDecoder
from asr_core.manifest import read_manifest
from asr_core.metrics import wer
from asr_core.small.recognizer import DEFAULT_LM_DIR, Recognizer


def tune_decoder(checkpoint: str, manifest: str, split: str = "dev", lm_weights=(0.4, 0.8, 1.2, 1.6),
                 word_scores=(-1.0, 0.0, 1.0, 2.0), limit: int = 0, progress=sys.stderr) -> dict:
    rec = Recognizer.load(checkpoint, decoder="greedy")
    utts = read_manifest(manifest, (split,))[: limit or None]
    if not utts:
        raise ValueError(f"{manifest}: no utterances in split {split!r}")
    logps = [rec.log_probs(load_audio(u.audio, rec.sample_rate)) for u in utts]
    lex, arpa = os.path.join(DEFAULT_LM_DIR, "lexicon.txt"), os.path.join(DEFAULT_LM_DIR, "lm.arpa")
    results = []
    for lw, ws in itertools.product(lm_weights, word_scores):
        dec = BeamDecoder(lex, arpa, lm_weight=lw, word_score=ws, frame_seconds=rec.model.cfg.frame_seconds)
        w = wer([(u.text, dec.decode(lp).text) for u, lp in zip(utts, logps)])
        results.append((w, lw, ws))
        print(f"tune-decoder: lm_weight {lw} word_score {ws}: WER {w:.4f}", file=progress, flush=True)
    best = min(results)
    return {"wer": best[0], "lm_weight": best[1], "word_score": best[2],
            "greedy_wer": wer([(u.text, rec.decode(lp).text) for u, lp in zip(utts, logps)])}


def write_decoder_settings(checkpoint: str, lm_weight: float, word_score: float) -> None:
    load_checkpoint(checkpoint)  # validates first
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["meta"] = dict(payload.get("meta", {}), lm_weight=lm_weight, word_score=word_score)
    torch.save(payload, checkpoint + ".part")
    os.replace(checkpoint + ".part", checkpoint)
