"""One caller's Whisper adaptation cost in two checkouts of this project, side by side: for each
checkout given, in turn, a fresh process adapts the `adapt` utterances of a manifest once per mode
(the product's settings, one thread, the audio encoded anew, label-free from the recognizer's own
transcripts as the worker passes the stored finals) and prints the CPU seconds. Alternate rounds
compare two versions on a machine whose speed drifts. Prints figures; it is not a test.

    git worktree add /tmp/before <commit>   # (with .venv, data and var/models linked in)
    .venv/bin/python bench/whisper_adapt_ab.py --manifest data/real-dev-hard/manifest.tsv \
        --checkout /tmp/before --checkout . --rounds 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

ONE = r"""
import sys, torch
root, manifest, modes = sys.argv[1], sys.argv[2], sys.argv[3].split(',')
sys.path.insert(0, root)
torch.set_num_threads(1)
from asr_core import defaults
from asr_core.audio import load_audio
from asr_core.engines import load_engine
from asr_core.manifest import read_manifest
from asr_core.whisper import adapt as A
rec = load_engine(defaults.FINAL_BACKBONE)
rows = read_manifest(manifest, ("adapt",))
audios, texts = [load_audio(u.audio, 8000) for u in rows], [u.text for u in rows]
rec.padding_context()
torch.optim.Adam([torch.zeros(1, requires_grad=True)])
stored = [rec.transcribe(x, 8000, word_timestamps=False).text for x in audios]
for mode in modes:
    cfg = rec.adaptation_config(mode, len(audios))
    A.forget_encoded()
    r = rec.adapt(audios, texts if mode == "supervised" else None, 8000, cfg=cfg, hypotheses=stored)
    print(f"{root}  {mode:<10}  CPU {r.metrics['cpu_seconds']:.2f} s  accepted {r.accepted}  "
          f"{r.metrics.get('reason') or ''}", flush=True)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="its `adapt` utterances are one caller's audio and texts")
    p.add_argument("--checkout", action="append", required=True, help="a checkout of this project (repeat)")
    p.add_argument("--modes", default="supervised,label-free")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or any(m not in ("supervised", "label-free") for m in modes):
        p.error(f"--modes takes supervised and/or label-free, got {a.modes!r}")
    for c in a.checkout:
        if not os.path.isfile(os.path.join(c, "asr_core", "__init__.py")):
            p.error(f"{c} is not a checkout of this project")
    if not os.path.isfile(a.manifest):
        p.error(f"manifest not found: {a.manifest}")
    for _ in range(a.rounds):
        for c in a.checkout:
            subprocess.run([sys.executable, "-c", ONE, os.path.abspath(c), os.path.abspath(a.manifest),
                            ",".join(modes)], check=True, cwd=os.path.abspath(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
