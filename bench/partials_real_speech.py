"""Live partials on real speech: the product's partial stream (`rec.stream().accept`) fed a real
speaker's prompts 500 ms at a time, as the web process feeds a call's segment; one thread. Prints
the WER of each prompt's last partial against its transcript and the mean cost of one partial.
Not a test.

    .venv/bin/python bench/partials_real_speech.py --manifest data/real-dev/manifest.tsv [--limit 30]
        [--trim-seconds 2|none] [--live-margin-seconds 1|none] [--backbone whisper-tiny]
        [--batch 10] [--encoder auto|int8|bfloat16|float32] [--no-retry] [--no-force]

--batch N feeds the prompts as N concurrent calls (call k says prompts k, k + N, ... one after
another): each step advances every call still speaking by its next chunk with one `accept_batch`
(each segment encoded in its own window, one decoding batch), as the web process's partials
thread does; the cost per partial is then the step's time over its streams. A step must take at most the chunk (500 ms) for every call
to get a partial per chunk.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from asr_core import defaults  # noqa: E402
from asr_core.audio import load_audio  # noqa: E402
from asr_core.manifest import read_manifest  # noqa: E402
from asr_core.metrics import word_errors  # noqa: E402
from asr_core.whisper.recognizer import WhisperRecognizer, WhisperStream, partial_encoder, partial_load_args  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--chunk-ms", type=int, default=500)
    ap.add_argument("--trim-seconds", type=lambda v: None if v == "none" else float(v),
                    default=WhisperStream.PARTIAL_TRIM_S,
                    help="the window cut after the segment + this much padding; 'none': the 30 s window, with "
                         "--live-margin-seconds")
    ap.add_argument("--live-margin-seconds", type=lambda v: None if v == "none" else float(v),
                    default=defaults.WHISPER_LIVE_MARGIN_S)
    ap.add_argument("--backbone", default=defaults.PARTIAL_BACKBONE, choices=["whisper-tiny", "whisper-base"])
    ap.add_argument("--batch", type=int, default=1, help="prompts decoded together, as concurrent calls")
    ap.add_argument("--encoder", default=defaults.PARTIAL_ENCODER, choices=defaults.PARTIAL_ENCODERS,
                    help="the encoder's precision, the decoder int8 (as the web process: ASR_PARTIAL_ENCODER)")
    ap.add_argument("--no-retry", action="store_true", help="a looping partial is only cut, not decoded again")
    ap.add_argument("--no-force", action="store_true",
                    help="each partial decodes the committed words again (not given as its start)")
    ap.add_argument("--min-doubled", type=int, default=WhisperStream.PARTIAL_MIN_DOUBLED,
                    help="a doubled phrase of this many tokens or more is cut to one copy; 0: never cut")
    a = ap.parse_args()
    if a.min_doubled < 0:
        ap.error("--min-doubled must be >= 0")
    if a.batch < 1:
        ap.error("--batch must be >= 1")
    WhisperStream.PARTIAL_RETRY = not a.no_retry
    WhisperStream.FORCE_COMMITTED = not a.no_force
    torch.set_num_threads(1)
    WhisperStream.PARTIAL_TRIM_S = a.trim_seconds
    WhisperStream.PARTIAL_MIN_DOUBLED = a.min_doubled or 10**6
    encoder = partial_encoder(a.encoder)
    rec = WhisperRecognizer.load(a.backbone, live_margin_s=a.live_margin_seconds,   # as the web process
                                 **partial_load_args(a.encoder))
    step = 8000 * a.chunk_ms // 1000
    errors = words = partials = 0
    cost, worst = 0.0, 0.0
    utts = read_manifest(a.manifest, ("test",))[: a.limit or None]
    # N concurrent calls: slot k says prompts k, k + N, k + 2N, ... one after another; every step
    # advances each slot still speaking by its next chunk, all in one accept_batch.
    queues = [[load_audio(u.audio, 8000) for u in utts[k::a.batch]] for k in range(a.batch)]
    texts = [[u.text for u in utts[k::a.batch]] for k in range(a.batch)]
    current = [0] * a.batch               # each slot's prompt
    offset = [0] * a.batch                # samples of it fed
    streams = [rec.stream(sample_rate=8000) for _ in range(a.batch)]
    last = [""] * a.batch
    rows = 0
    while True:
        live = [k for k in range(a.batch) if current[k] < len(queues[k])]
        if not live:
            break
        t0 = time.perf_counter()
        out = rec.accept_batch([streams[k] for k in live],
                               [queues[k][current[k]][offset[k]:offset[k] + step] for k in live])
        took = time.perf_counter() - t0
        cost, worst, partials, rows = cost + took, max(worst, took), partials + len(live), rows + 1
        for k, t in zip(live, out):
            last[k] = t.text
            offset[k] += step
            if offset[k] >= queues[k][current[k]].numel():      # the prompt ended: score its last partial
                e, n = word_errors(texts[k][current[k]], last[k])
                errors, words = errors + e, words + n
                current[k], offset[k], streams[k] = current[k] + 1, 0, rec.stream(sample_rate=8000)
    window = f"trim {a.trim_seconds:g} s" if a.trim_seconds is not None else \
        f"30 s window, live margin {a.live_margin_seconds} s"
    print(f"{a.backbone} {window}, {encoder} encoder, doubled phrases cut from {a.min_doubled or 'never'}, batch {a.batch}: "
          f"last-partial WER {errors / words:.2%} over {words} words; {cost / partials * 1000:.0f} ms per partial, "
          f"{partials / rows:.1f} streams and {cost / rows * 1000:.0f} ms per step, slowest {worst * 1000:.0f} ms "
          f"({partials} partials, one thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
