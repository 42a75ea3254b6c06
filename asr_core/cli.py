"""Command-line interface: corpus, train, evaluate, transcribe, build-lm.

Every user error (bad flag value, missing or corrupt file, corrupt checkpoint)
is printed as one line `error: ...` with exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _non_negative_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def cmd_corpus(a: argparse.Namespace) -> int:
    from asr_core.corpus.build import CorpusConfig, build_corpus
    cfg = CorpusConfig(out=a.out, seed=a.seed, train_speakers=a.train_speakers, dev_speakers=a.dev_speakers,
                       test_speakers=a.test_speakers, train_utts=a.train_utts, dev_utts=a.dev_utts,
                       adapt_utts=a.adapt_utts, test_utts=a.test_utts, workers=a.workers)
    print(build_corpus(cfg))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from asr_core.train import TrainConfig, train
    cfg = TrainConfig(manifest=a.manifest, out=a.out, epochs=a.epochs, lr=a.lr, batch_frames=a.batch_frames,
                      threads=a.threads, device=a.device, d_model=a.d_model, n_blocks=a.n_blocks,
                      max_train_utts=a.max_train_utts, init=a.init or "", seed=a.seed)
    print(train(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("corpus", help="synthesize a multi-speaker telephone corpus + manifest.tsv")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--seed", type=int, default=1234)
    c.add_argument("--train-speakers", type=_non_negative_int, default=200)
    c.add_argument("--dev-speakers", type=_non_negative_int, default=12)
    c.add_argument("--test-speakers", type=_non_negative_int, default=24)
    c.add_argument("--train-utts", type=_non_negative_int, default=30)
    c.add_argument("--dev-utts", type=_non_negative_int, default=10)
    c.add_argument("--adapt-utts", type=_non_negative_int, default=10)
    c.add_argument("--test-utts", type=_non_negative_int, default=10)
    c.add_argument("--workers", type=_positive_int, default=2)
    c.set_defaults(func=cmd_corpus)

    t = sub.add_parser("train", help="train the streaming CTC model (resumes from OUT/train_state.pt)")
    t.add_argument("--manifest", required=True)
    t.add_argument("--out", required=True, help="folder for best.pt, last.pt, train_state.pt")
    t.add_argument("--epochs", type=_positive_int, default=12)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--batch-frames", type=_positive_int, default=12000)
    t.add_argument("--threads", type=_non_negative_int, default=0)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--d-model", type=_positive_int, default=256)
    t.add_argument("--n-blocks", type=_positive_int, default=8)
    t.add_argument("--max-train-utts", type=_non_negative_int, default=0)
    t.add_argument("--init", help="start from this checkpoint's weights")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from asr_core.errors import user_errors
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
