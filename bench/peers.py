"""Our recognizer (the product's default, or --checkpoint) vs pocketsphinx vs Whisper tiny
(faster-whisper, int8) on the same test split, one run.

    bash bench/setup_peers.sh                       # once: peers in var/bench-venv
    .venv/bin/python bench/peers.py --manifest data/corpus/manifest.tsv [--limit 120]

Each system decodes on one CPU thread; WER after the same normalization. Prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PY = os.path.join(ROOT, "var", "bench-venv", "bin", "python")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--checkpoint", default=None)
    a = ap.parse_args()
    if not os.path.exists(PEER_PY):
        print("error: run `bash bench/setup_peers.sh` first", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "ours.json")
        cmd = [sys.executable, "-m", "asr_core", "evaluate", "--manifest", a.manifest, "--threads", "1",
               "--limit", str(a.limit), "--json", ours] + (["--checkpoint", a.checkpoint] if a.checkpoint else [])
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        r = json.load(open(ours))
        rows.append((f"ours ({r.get('backbone', 'default')})", r["wer"], r["cer"], r["rtf"], r["utterances"], r["words"]))
        for system in ("pocketsphinx", "whisper-tiny"):
            out = os.path.join(tmp, f"{system}.json")
            subprocess.run([PEER_PY, os.path.join(ROOT, "bench", "peer_decode.py"), "--system", system,
                            "--manifest", a.manifest, "--limit", str(a.limit), "--json", out],
                           check=True, cwd=ROOT, env=env)
            r = json.load(open(out))
            rows.append((system, r["wer"], r["cer"], r["rtf"], r["utterances"], r["words"]))
    print(f"\n{'system':28s} {'WER':>7s} {'CER':>7s} {'RTF':>7s} {'utts':>5s} {'words':>6s}")
    for name, w, c, rtf, n, words in rows:
        print(f"{name:28s} {w:7.2%} {c:7.2%} {rtf:7.3f} {n:5d} {words:6d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
