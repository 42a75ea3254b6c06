"""Our PyTorch Whisper vs faster-whisper (CTranslate2) on the same utterances, one CPU thread, one run.

    .venv/bin/python bench/whisper_side_by_side.py --manifest data/corpus/manifest.tsv --limit 60

Runs `python -m asr_core evaluate --backbone ...` (our model: float32 and int8, greedy) in the
product venv and `bench/whisper_peer.py` (faster-whisper int8 and float32, greedy and beam 5) in
the product venv (or var/bench-venv), sequentially, each on one thread; both feed the same 8 kHz audio resampled to
16 kHz by asr_core.audio and score with the same normalization. Prints a table; --json keeps it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# faster-whisper: in the product venv (requirements.txt pins it for the port's reference tests), else
# bench/setup_peers.sh's venv
_BENCH_PY = os.path.join(ROOT, "var", "bench-venv", "bin", "python")
PEER_PY = _BENCH_PY if os.path.exists(_BENCH_PY) else sys.executable


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--backbone", default="whisper-tiny", choices=["whisper-tiny", "whisper-base"])
    ap.add_argument("--json", help="write all rows here")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in ((f"ours {a.backbone} fp32 greedy", []), (f"ours {a.backbone} int8 greedy", ["--int8"]),
                             (f"ours {a.backbone} int8 beam5", ["--int8", "--beam-size", "5"]),
                             (f"ours {a.backbone} int8 greedy trim1s", ["--int8", "--trim-seconds", "1"])):
            out = os.path.join(tmp, "ours.json")
            subprocess.run([sys.executable, "-m", "asr_core", "evaluate", "--backbone", a.backbone,
                            "--manifest", a.manifest, "--limit", str(a.limit), "--threads", "1", "--json", out, *extra],
                           check=True, cwd=ROOT, env=env)
            r = json.load(open(out))
            rows.append((label, r["wer"], r["cer"], r["rtf"], r["utterances"], r["words"]))
        size = a.backbone.split("-")[1]
        for compute, beam in (("int8", 1), ("float32", 1), ("int8", 5)):
            out = os.path.join(tmp, "peer.json")
            subprocess.run([PEER_PY, os.path.join(ROOT, "bench", "whisper_peer.py"), "--size", size,
                            "--manifest", a.manifest, "--limit", str(a.limit), "--compute-type", compute,
                            "--beam-size", str(beam), "--json", out], check=True, cwd=ROOT, env=env)
            r = json.load(open(out))
            rows.append((f"faster-whisper {size} {compute} {'greedy' if beam == 1 else 'beam5'}",
                         r["wer"], r["cer"], r["rtf"], r["utterances"], r["words"]))
    print(f"\n{'system':36s} {'WER':>7s} {'CER':>7s} {'RTF':>7s} {'utts':>5s} {'words':>6s}")
    for name, w, c, rtf, n, words in rows:
        print(f"{name:36s} {w:7.2%} {c:7.2%} {rtf:7.3f} {n:5d} {words:6d}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dict(zip(("system", "wer", "cer", "rtf", "utterances", "words"), r)) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
