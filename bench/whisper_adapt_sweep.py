"""Plain (not meta-learned) supervised adaptation of Whisper's LoRA group: a sweep of
placement, step size and steps on development speakers. Prints figures; it is not a test.

    .venv/bin/python bench/whisper_adapt_sweep.py --manifest data/wcorpus/manifest.tsv --speakers 8 \
        --layers 2,4 --step-sizes 0.02,0.05,0.1 --steps 4,8

Speakers: the first N `train` speakers of the manifest with at least 20 utterances (Whisper never
saw them; pick speakers meta-training did not use if you compare with it). Per speaker the first
10 utterances adapt (plain SGD through `meta.adapt()`, from B = 0: plain Whisper), the next 10 are
scored; WER before/after and seconds of adaptation per speaker, one thread.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    import torch

    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.meta import adapt, detached
    from asr_core.metrics import wer
    from asr_core.whisper.adapt import make_whisper_batch, plain_whisper_params, whisper_loss
    from asr_core.whisper.recognizer import WhisperRecognizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--backbone", default="whisper-tiny")
    ap.add_argument("--speakers", type=int, default=8)
    ap.add_argument("--layers", default="2,4", help="encoder blocks (from the top) that carry LoRA")
    ap.add_argument("--step-sizes", default="0.02,0.05,0.1")
    ap.add_argument("--steps", default="4,8")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = read_manifest(a.manifest, ("train",))
    by: dict[str, list] = {}
    for u in rows:
        by.setdefault(u.speaker, []).append(u)
    speakers = [s for s in sorted(by) if len(by[s]) >= 20][: a.speakers]
    data = {s: [(load_audio(u.audio, 8000), u.text) for u in by[s][:20]] for s in speakers}
    print(f"{len(speakers)} speakers: {' '.join(speakers)}", flush=True)
    print(f"{'layers':>6s} {'step':>6s} {'steps':>5s} {'WER before':>10s} {'after':>7s} {'rel':>7s} "
          f"{'worse':>5s} {'s/speaker':>9s}", flush=True)
    for layers in [int(x) for x in a.layers.split(",")]:
        rec = WhisperRecognizer.load(a.backbone, quantize=True, trim_seconds=1.0, lora_layers=layers)
        before = {}
        for s in speakers:
            test = data[s][10:]
            before[s] = [(t, rec.transcribe(x, 8000, params=None, word_timestamps=False).text) for x, t in test]
        for size in [float(x) for x in a.step_sizes.split(",")]:
            for steps in [int(x) for x in a.steps.split(",")]:
                after, seconds, worse = {}, 0.0, 0
                for s in speakers:
                    ad, test = data[s][:10], data[s][10:]
                    t0 = time.perf_counter()
                    batch = make_whisper_batch(rec, [x for x, _ in ad], [t for _, t in ad], 8000)
                    params = detached(adapt(rec.model, plain_whisper_params(rec), batch, steps, size, loss=whisper_loss))
                    seconds += time.perf_counter() - t0
                    after[s] = [(t, rec.transcribe(x, 8000, params=params, word_timestamps=False).text) for x, t in test]
                    worse += wer(after[s]) > wer(before[s]) + 0.02
                w0 = wer([p for s in speakers for p in before[s]])
                w1 = wer([p for s in speakers for p in after[s]])
                print(f"{layers:6d} {size:6.3f} {steps:5d} {w0:10.2%} {w1:7.2%} {(w1 - w0) / max(w0, 1e-9):+7.1%} "
                      f"{worse:5d} {seconds / len(speakers):9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
