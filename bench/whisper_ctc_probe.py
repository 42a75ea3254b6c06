"""Could live partials come from a CTC head on the frozen Whisper tiny encoder? (issue 21: a
partial would then cost the encoder pass alone.) Trains a character CTC head on the partials
recognizer's encoder output (int8, the segment plus 0.5 s) of a synthesized corpus, then prints
its greedy WER on real-speech manifests' `test` prompts. Prints figures; it is not a test, and
nothing it trains is used by the product (2026-12-06: 88-90 % WER on the real development
prompts, clean; docs/recognizer.md).

    .venv/bin/python -m asr_core corpus --out data/ctc-corpus --seed 4242 --train-speakers 120 \\
        --accent-train-speakers 24 --dev-speakers 0 --test-speakers 0 --train-utts 24 --splits train --workers 2
    .venv/bin/python bench/whisper_ctc_probe.py --corpus data/ctc-corpus/manifest.tsv \\
        --dev data/real-dev/manifest.tsv --dev data/real-dev-hard/manifest.tsv --head gru --epochs 12
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAD_S = 0.5


def features(rec, manifest: str, splits: tuple[str, ...]) -> list[tuple]:
    """(encoder output of the segment's own positions, float16; normalized text) per utterance
    (the text as the small CTC model's vocabulary spells it: `asr_core.text`)."""
    import torch

    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.text import normalize

    out = []
    with torch.inference_mode():
        for u in read_manifest(manifest, splits):
            x = rec.prepare(load_audio(u.audio, 8000), 8000)[: 30 * 16000]
            mel, frames = rec.features(x)
            enc, _ = rec.encode_segment(mel, frames, None, trim_seconds=PAD_S)
            out.append((enc[0, : (frames + 1) // 2].to(torch.float16).clone(), normalize(u.text)))
    return out


def head(kind: str):
    import torch.nn as nn

    from asr_core.text import VOCAB

    class Head(nn.Module):
        def __init__(self, d: int = 384, hidden: int = 128):
            super().__init__()
            self.kind = kind
            if kind == "linear":
                self.inp, self.out = nn.Sequential(nn.LayerNorm(d), nn.Dropout(0.1)), nn.Linear(d, len(VOCAB))
                return
            self.inp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 256), nn.GELU(), nn.Dropout(0.1))
            self.rnn = nn.GRU(256, hidden, batch_first=True, bidirectional=True)
            self.out = nn.Linear(2 * hidden, len(VOCAB))

        def forward(self, x, lengths):
            x = self.inp(x)
            if self.kind != "linear":
                x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                x = nn.utils.rnn.pad_packed_sequence(self.rnn(x)[0], batch_first=True)[0]
            return self.out(x).log_softmax(-1)

    return Head()


def dev_wer(model, data) -> float:
    import torch

    from asr_core.metrics import wer
    from asr_core.small.decoder import greedy_decode

    model.eval()
    with torch.no_grad():
        pairs = [(t, greedy_decode(model(f.float()[None], torch.tensor([f.shape[0]]))[0]).text) for f, t in data]
    model.train()
    return wer(pairs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="synthesized training manifest (its `train` split)")
    p.add_argument("--dev", action="append", required=True, help="real-speech manifest (its `test` split); repeatable")
    p.add_argument("--head", choices=("linear", "gru"), default="gru")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.epochs < 1 or a.threads < 1:
        p.error("--epochs and --threads must be at least 1")
    import torch
    import torch.nn as nn

    from asr_core.engines import EngineSettings, load_engine
    from asr_core.errors import ManifestError
    from asr_core.text import encode

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    random.seed(0)
    rec = load_engine("whisper-tiny", settings=EngineSettings(partials=True))
    t0 = time.time()
    try:
        train = features(rec, a.corpus, ("train",))
        devs = {m: features(rec, m, ("test",)) for m in a.dev}
    except ManifestError as e:
        p.error(str(e))
    if not train:
        p.error(f"{a.corpus} has no `train` utterances")
    print(f"features of {len(train)} training utterances in {time.time() - t0:.0f} s", flush=True)
    model = head(a.head)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    ctc = nn.CTCLoss(zero_infinity=True)
    order = sorted(range(len(train)), key=lambda i: train[i][0].shape[0])
    batches = [order[i:i + 24] for i in range(0, len(order), 24)]
    total, step = a.epochs * len(batches), 0
    for epoch in range(a.epochs):
        random.shuffle(batches)
        t0, losses = time.time(), []
        for b in batches:
            for g in opt.param_groups:   # warm-up, then cosine
                g["lr"] = 2e-3 * min(1, step / 200) * 0.5 * (1 + math.cos(math.pi * step / total))
            feats = [train[i][0].float() for i in b]
            lengths = torch.tensor([f.shape[0] for f in feats])
            x = nn.utils.rnn.pad_sequence(feats, batch_first=True)
            x = x + 0.05 * torch.randn_like(x) * x.std()
            for k in range(x.shape[0]):          # two time masks of up to 10 positions each
                for _ in range(2):
                    w = random.randint(0, 10)
                    s = random.randint(0, max(0, int(lengths[k]) - w))
                    x[k, s:s + w] = 0
            targets = [torch.tensor(encode(train[i][1])) for i in b]
            loss = ctc(model(x, lengths).transpose(0, 1), torch.cat(targets), lengths,
                       torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        line = f"epoch {epoch} loss {sum(losses) / len(losses):.3f} {time.time() - t0:.0f} s"
        if epoch % 3 == 2 or epoch == a.epochs - 1:
            line += "".join(f"  {m}: WER {100 * dev_wer(model, d):.2f} %" for m, d in devs.items())
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
