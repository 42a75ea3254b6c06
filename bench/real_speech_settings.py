"""Recognition settings measured on real speech: our Whisper port under each decoding setting, and
faster-whisper tiny beside it, on the same utterances, one CPU thread each, one run.

    .venv/bin/python -m asr_core phone-line --manifest data/real-dev/manifest.tsv --line hard \\
        --out data/real-dev-hard
    .venv/bin/python bench/real_speech_settings.py --manifest clean=data/real-dev/manifest.tsv \\
        --manifest hard=data/real-dev-hard/manifest.tsv [--only 'default|tiny int8'] [--json out.json]

Every row is `python -m asr_core evaluate` (the `test` split) with the flags shown, so each figure
can be reproduced alone; the peer row is `bench/peer_decode.py --system whisper-tiny` (faster-whisper
tiny, int8, beam 5, Whisper's own transcribe loop with timestamps, no VAD). Prints WER and RTF per
setting and manifest.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BENCH_PY = os.path.join(ROOT, "var", "bench-venv", "bin", "python")
PEER_PY = _BENCH_PY if os.path.exists(_BENCH_PY) else sys.executable

# (label, evaluate flags); the product's default (no flags) is the first row.
SETTINGS = [
    ("default", []),
    ("tiny fp32 beam5 full window", ["--backbone", "whisper-tiny", "--int8", "off", "--beam-size", "5"]),
    ("tiny int8-decoder beam5 full window, all computed", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5"]),
    ("tiny int8-decoder beam5 live margin 1 s, padding not pooled (the default before)",
     ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5", "--live-margin-seconds", "1",
      "--tail-pool", "1"]),
    ("tiny int8-decoder beam5 live margin 1 s, padding pooled by 10",
     ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5", "--live-margin-seconds", "1",
      "--tail-pool", "10"]),
    ("tiny int8-decoder beam5 live margin 0.5 s", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size",
                                                  "5", "--live-margin-seconds", "0.5"]),
    ("tiny int8-decoder beam5 live margin 2 s", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size",
                                                "5", "--live-margin-seconds", "2"]),
    ("tiny int8-decoder beam5 trim 4 s", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5",
                                          "--trim-seconds", "4"]),
    ("tiny int8-decoder beam5 trim 6 s", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5",
                                          "--trim-seconds", "6"]),
    ("tiny int8-decoder beam5 trim 8 s", ["--backbone", "whisper-tiny", "--int8", "decoder", "--beam-size", "5",
                                          "--trim-seconds", "8"]),
    ("tiny fp32 beam5 trim 6 s", ["--backbone", "whisper-tiny", "--beam-size", "5", "--trim-seconds", "6"]),
    ("tiny int8 beam5 full window", ["--backbone", "whisper-tiny", "--int8", "--beam-size", "5"]),
    ("tiny int8 greedy full window", ["--backbone", "whisper-tiny", "--int8"]),
    ("tiny fp32 greedy full window", ["--backbone", "whisper-tiny"]),
    ("tiny int8 greedy trim 1 s", ["--backbone", "whisper-tiny", "--int8", "--trim-seconds", "1"]),
    ("tiny int8 beam5 trim 3 s", ["--backbone", "whisper-tiny", "--int8", "--beam-size", "5", "--trim-seconds", "3"]),
    ("tiny fp32 beam5 trim 3 s", ["--backbone", "whisper-tiny", "--beam-size", "5", "--trim-seconds", "3"]),
    ("tiny fp32 greedy trim 3 s", ["--backbone", "whisper-tiny", "--trim-seconds", "3"]),
    ("base int8 greedy full window", ["--backbone", "whisper-base", "--int8"]),
    ("base int8 beam5 full window", ["--backbone", "whisper-base", "--int8", "--beam-size", "5"]),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", action="append", required=True, help="LABEL=PATH (repeatable)")
    ap.add_argument("--only", default="", help="only settings whose label contains this (or one of these, "
                    "separated by '|')")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", help="write all rows here")
    a = ap.parse_args()
    manifests = []
    for item in a.manifest:
        label, sep, path = item.partition("=")
        if not sep or not os.path.isfile(path):
            print(f"error: --manifest takes LABEL=PATH of an existing manifest, got {item!r}", file=sys.stderr)
            return 2
        manifests.append((label, path))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        for label, flags in SETTINGS:
            if not any(part in label for part in a.only.split("|")):
                continue
            for mlabel, path in manifests:
                subprocess.run([sys.executable, "-m", "asr_core", "evaluate", "--manifest", path, "--threads", "1",
                                "--json", out, *flags], check=True, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
                r = json.load(open(out))
                rows.append({"system": f"ours {label}", "line": mlabel, "wer": r["wer"], "rtf": r["rtf"],
                             "flags": " ".join(flags)})
                print(f"{rows[-1]['system']:40s} {mlabel:8s} WER {r['wer']:7.2%} RTF {r['rtf']:.3f}", flush=True)
        if not a.no_peer:
            for mlabel, path in manifests:
                subprocess.run([PEER_PY, os.path.join(ROOT, "bench", "peer_decode.py"), "--system", "whisper-tiny",
                                "--manifest", path, "--json", out], check=True, cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL)
                r = json.load(open(out))
                rows.append({"system": "faster-whisper tiny int8 beam5", "line": mlabel, "wer": r["wer"],
                             "rtf": r["rtf"], "flags": "bench/peer_decode.py --system whisper-tiny"})
                print(f"{rows[-1]['system']:40s} {mlabel:8s} WER {r['wer']:7.2%} RTF {r['rtf']:.3f}", flush=True)
    lines = [m for m, _ in manifests]
    print(f"\n| setting | {' | '.join(f'WER {m}' for m in lines)} | {' | '.join(f'RTF {m}' for m in lines)} |")
    print("|---|" + "---|" * (2 * len(lines)))
    for system in dict.fromkeys(r["system"] for r in rows):
        got = {r["line"]: r for r in rows if r["system"] == system}
        wers = " | ".join(f"{got[m]['wer']:.1%}" if m in got else "" for m in lines)
        rtfs = " | ".join(f"{got[m]['rtf']:.3f}" if m in got else "" for m in lines)
        print(f"| {system} | {wers} | {rtfs} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
