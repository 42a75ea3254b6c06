"""Live partials on real speech: the product's partial stream (`rec.stream().accept`) fed a real
speaker's prompts 500 ms at a time, as the web process feeds a call's segment; one thread. Prints
the WER of each prompt's last partial against its transcript and the mean cost of one partial.
Not a test.

    .venv/bin/python bench/partials_real_speech.py --manifest data/real-dev/manifest.tsv [--limit 30]
        [--trim-seconds 2|none] [--live-margin-seconds 1|none] [--backbone whisper-tiny]
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
from asr_core.whisper.recognizer import WhisperRecognizer, WhisperStream  # noqa: E402


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
    ap.add_argument("--min-doubled", type=int, default=WhisperStream.PARTIAL_MIN_DOUBLED,
                    help="a doubled phrase of this many tokens or more is cut to one copy; 0: never cut")
    a = ap.parse_args()
    if a.min_doubled < 0:
        ap.error("--min-doubled must be >= 0")
    torch.set_num_threads(1)
    WhisperStream.PARTIAL_TRIM_S = a.trim_seconds
    WhisperStream.PARTIAL_MIN_DOUBLED = a.min_doubled or 10**6
    rec = WhisperRecognizer.load(a.backbone, quantize=True,   # as the web process loads it
                                 live_margin_s=a.live_margin_seconds)
    step = 8000 * a.chunk_ms // 1000
    errors = words = partials = 0
    cost = 0.0
    for u in read_manifest(a.manifest, ("test",))[: a.limit or None]:
        x = load_audio(u.audio, 8000)
        stream, last = rec.stream(sample_rate=8000), ""
        for start in range(0, x.numel(), step):
            t0 = time.perf_counter()
            last = stream.accept(x[start:start + step]).text
            cost += time.perf_counter() - t0
            partials += 1
        e, n = word_errors(u.text, last)
        errors, words = errors + e, words + n
    window = f"trim {a.trim_seconds:g} s" if a.trim_seconds is not None else \
        f"30 s window, live margin {a.live_margin_seconds} s"
    print(f"{a.backbone} {window}, doubled phrases cut from {a.min_doubled or 'never'}: last-partial WER {errors / words:.2%} over {words} words; "
          f"{cost / partials * 1000:.0f} ms per partial ({partials} partials, one thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
