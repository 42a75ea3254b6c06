"""asr_core.small.caller_meta: meta-training the small model from a deployment's callers, the
held-out WER that gates it, and its errors (other weights, audio that cannot be read, divergence)."""
from __future__ import annotations

import math
import random

import pytest
import soundfile as sf

from asr_core.corpus.sentences import sentences
from asr_core.corpus.speakers import make_speaker
from asr_core.corpus.synth import render
from asr_core.errors import AudioError, CheckpointError, TrainingError
from asr_core.small import caller_meta
from asr_core.small.checkpoint import BASE_CTC_CHECKPOINT, DEFAULT_CHECKPOINT, load_checkpoint


@pytest.fixture(scope="module")
def callers(tmp_path_factory) -> dict[int, list[tuple[str, str]]]:
    """Two synthetic callers, 4 sentences each, as WAV files: caller -> [(path, text)]."""
    folder = tmp_path_factory.mktemp("callers")
    rng = random.Random(3)
    out: dict[int, list[tuple[str, str]]] = {}
    while len(out) < 2:
        speaker = make_speaker(rng, f"cm{len(out)}", "test")
        if speaker.engine != "espeak":
            continue
        items = []
        for i, text in enumerate(sentences(random.Random(40 + len(out)), 4)):
            path = folder / f"{speaker.id}-{i}.wav"
            sf.write(path, render(speaker, text, 90 + i), 8000)
            items.append((str(path), text))
        out[len(out) + 1] = items
    return out


def test_load_verified_returns_the_checkpoint_only_when_it_holds_the_named_weights():
    sha = load_checkpoint(DEFAULT_CHECKPOINT)[1]["sha256"]

    rec = caller_meta.load_verified(DEFAULT_CHECKPOINT, sha256=sha, decoder="greedy")

    assert rec.meta["sha256"] == sha
    with pytest.raises(CheckpointError, match="holds other weights"):
        caller_meta.load_verified(BASE_CTC_CHECKPOINT, sha256=sha, decoder="greedy")
    with pytest.raises(CheckpointError, match="not found"):
        caller_meta.load_verified(DEFAULT_CHECKPOINT + ".missing", sha256=sha, decoder="greedy")


def test_a_candidate_is_a_new_model_version_with_its_provenance_and_both_are_scored(callers, tmp_path):
    sha = load_checkpoint(DEFAULT_CHECKPOINT)[1]["sha256"]
    current = caller_meta.load_verified(DEFAULT_CHECKPOINT, sha256=sha, decoder="greedy")
    cfg = caller_meta.CallerMetaConfig(outer_steps=2, meta_batch=1)

    candidate = caller_meta.candidate_train(current, {1: callers[1]}, cfg, folder=str(tmp_path),
                                            provenance={"parent": "shipped"}, decoder="greedy")

    assert candidate.path == str(tmp_path / "candidate.pt") and candidate.sha256 != sha
    model, meta = load_checkpoint(candidate.path)
    assert meta["sha256"] == candidate.sha256 == candidate.recognizer.meta["sha256"]
    assert meta["meta_train_customers"] == {"parent": "shipped"}
    assert meta["adapt"]["algo"] == current.meta["adapt"]["algo"] and set(meta["adapt"]["init"])
    held = {2: callers[2]}
    figures = [caller_meta.held_out_wer(rec, held) for rec in (current, candidate.recognizer)]
    assert all(math.isfinite(f) and 0 <= f for f in figures)
    assert figures[0] == caller_meta.held_out_wer(current, held)  # deterministic


def test_audio_that_cannot_be_read_and_a_diverging_run_are_asr_core_errors(callers, tmp_path):
    sha = load_checkpoint(DEFAULT_CHECKPOINT)[1]["sha256"]
    current = caller_meta.load_verified(DEFAULT_CHECKPOINT, sha256=sha, decoder="greedy")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")

    with pytest.raises(AudioError):
        caller_meta.held_out_wer(current, {1: [(str(broken), "hello"), *callers[1]]})
    with pytest.raises(TrainingError, match="diverged"):
        caller_meta.candidate_train(current, {1: callers[1]},
                                    caller_meta.CallerMetaConfig(outer_steps=3, meta_batch=1, outer_lr=math.inf),
                                    folder=str(tmp_path), provenance={}, decoder="greedy")
    assert not (tmp_path / "candidate.pt").exists()
