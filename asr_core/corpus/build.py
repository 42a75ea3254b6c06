"""`python -m asr_core corpus`: build a multi-speaker telephone corpus + manifest.

Deterministic from a seed (each utterance has its own derived seed, so the
result does not depend on the number of worker processes). Splits by speaker:
train / dev / test speakers never overlap; each test speaker has `adapt`
utterances (for per-caller adaptation) and `test` utterances; test sentences
never occur in training.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import soundfile as sf

from asr_core.corpus.sentences import sentences
from asr_core.corpus.speakers import Speaker, make_accented_speaker, make_speaker
from asr_core.corpus.synth import SAMPLE_RATE, SynthesisError, check_tools, render
from asr_core.manifest import write_manifest


@dataclass(frozen=True)
class CorpusConfig:
    out: str
    seed: int = 1234
    train_speakers: int = 200
    dev_speakers: int = 12
    test_speakers: int = 24
    train_utts: int = 30
    dev_utts: int = 10
    adapt_utts: int = 10
    test_utts: int = 10
    # accented callers (other languages' voices reading English), added after the speakers above
    accent_train_speakers: int = 0
    accent_dev_speakers: int = 0
    accent_test_speakers: int = 0
    workers: int = max(1, os.cpu_count() or 1)
    # render only the speakers of these splits (e.g. ("test",): the evaluation callers alone);
    # every speaker, sentence and file name stays what the whole corpus would have
    splits: tuple[str, ...] = ("train", "dev", "test")

    def __post_init__(self) -> None:
        bad = set(self.splits) - {"train", "dev", "test"}
        if bad or not self.splits:
            raise ValueError(f"splits must be some of train, dev, test; got {sorted(bad) or 'none'}")
        for name in ("train_speakers", "dev_speakers", "test_speakers", "train_utts", "dev_utts",
                     "adapt_utts", "test_utts", "accent_train_speakers", "accent_dev_speakers",
                     "accent_test_speakers", "workers"):
            if getattr(self, name) < 0 or (name == "workers" and self.workers < 1):
                raise ValueError(f"expected {name} >= {1 if name == 'workers' else 0}, got {getattr(self, name)}")


def _plan(cfg: CorpusConfig) -> tuple[list[Speaker], list[tuple[Speaker, str, str, int]]]:
    """Speakers and (speaker, split, text, seed) jobs; pure function of the config.

    Accented speakers come last from their own random stream, so adding them leaves every
    other speaker, sentence and file name of the corpus as it was."""
    rng = random.Random(cfg.seed)
    accent_rng = random.Random(cfg.seed + 2)
    test_sents = set(sentences(random.Random(cfg.seed + 1), 400))
    speakers: list[Speaker] = []
    jobs: list[tuple[Speaker, str, str, int]] = []
    plan = [(split, count, make_speaker, rng, "") for split, count in
            (("train", cfg.train_speakers), ("dev", cfg.dev_speakers), ("test", cfg.test_speakers))]
    plan += [(split, count, make_accented_speaker, accent_rng, "acc") for split, count in
             (("train", cfg.accent_train_speakers), ("dev", cfg.accent_dev_speakers), ("test", cfg.accent_test_speakers))]
    for split, count, make, rng, tag in plan:
        for i in range(count):
            sp = make(rng, f"{split}{tag}{i:04d}", split)
            speakers.append(sp)
            srng = random.Random(rng.getrandbits(32))
            if split == "train":
                parts = [("train", sentences(srng, cfg.train_utts, exclude=test_sents))]
            elif split == "dev":
                parts = [("dev", sentences(srng, cfg.dev_utts, exclude=test_sents))]
            else:
                pool = sorted(test_sents)
                srng.shuffle(pool)
                parts = [("adapt", sentences(srng, cfg.adapt_utts, exclude=test_sents)),
                         ("test", pool[:cfg.test_utts])]
            for utt_split, texts in parts:
                for text in texts:
                    jobs.append((sp, utt_split, text, srng.getrandbits(31)))
    return speakers, jobs


def _render_job(args: tuple[Speaker, str, str, int, str, int]) -> tuple[str, float] | None:
    sp, _split, text, seed, out_dir, idx = args
    rel = os.path.join("audio", sp.id, f"{sp.id}_{idx:05d}.wav")
    path = os.path.join(out_dir, rel)
    if not os.path.exists(path):  # resumable: finished files are kept
        try:
            audio = render(sp, text, seed)
        except SynthesisError as e:  # one bad utterance must not sink a long run
            print(f"corpus: skipped {rel}: {e}", file=sys.stderr, flush=True)
            return None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".part"
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    return rel, sf.info(path).duration


def build_corpus(cfg: CorpusConfig, progress=sys.stderr) -> str:
    """Render every utterance and write `manifest.tsv` + `speakers.json`. Returns the manifest path."""
    speakers, jobs = _plan(cfg)
    speakers = [sp for sp in speakers if sp.split in cfg.splits]
    check_tools({sp.engine for sp in speakers})
    os.makedirs(cfg.out, exist_ok=True)
    work = [(sp, split, text, seed, cfg.out, i) for i, (sp, split, text, seed) in enumerate(jobs)
            if sp.split in cfg.splits]
    rows, total_sec, skipped, t0 = [], 0.0, 0, time.time()
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        for n, (done, (sp, split, text, _s, _o, _i)) in enumerate(
                zip(pool.map(_render_job, work, chunksize=8), work), start=1):
            if done is None:
                skipped += 1
            else:
                rows.append((sp.id, split, done[0], text))
                total_sec += done[1]
            if n % 200 == 0 or n == len(work):
                rate = n / max(time.time() - t0, 1e-6)
                print(f"corpus: {n}/{len(work)} utterances, {total_sec / 3600:.2f} h audio, "
                      f"{skipped} skipped, {rate:.1f} utt/s, eta {(len(work) - n) / rate:.0f} s", file=progress, flush=True)
    manifest = os.path.join(cfg.out, "manifest.tsv")
    write_manifest(manifest, rows)
    with open(os.path.join(cfg.out, "speakers.json"), "w") as f:
        json.dump({"seed": cfg.seed, "speakers": [sp.as_dict() for sp in speakers]}, f, indent=1)
    return manifest
