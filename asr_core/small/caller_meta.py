"""Meta-learning the small model from a deployment's own callers, and scoring it on held-out ones.

The backend's periodic meta-training (``callcenter.calls.services.training``, through the bridge
``callcenter.asr``) keeps the rules: which callers, when, and whether a candidate is promoted. Here
is the model side:

- ``load_verified(checkpoint, sha256=, decoder=)``: a recognizer whose weights must be ``sha256``.
- ``candidate_train(current, tasks, cfg, folder=, provenance=, decoder=)``: meta-train a copy of
  ``current``'s adaptable initialization and step sizes (``MetaLearner``, the algorithm and inner
  steps of ``current``'s checkpoint; support = the first half of a caller's utterances, query = the
  rest) and write it as ``folder/candidate.pt``.
- ``held_out_wer(rec, held)``: corpus WER on the second half of each held-out caller's utterances
  after supervised adaptation (no guard) on the first half.

``tasks`` / ``held``: caller id -> [(audio file path, normalized text)].
Errors: ``CheckpointError`` (a checkpoint that cannot be read or holds other weights),
``TrainingError`` (meta-training diverged).
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import torch

from asr_core.adaptation import AdaptationConfig, adapt_caller
from asr_core.audio import load_audio
from asr_core.errors import CheckpointError, TrainingError
from asr_core.meta import MetaLearner, adaptation_init, initial_params, load_params, make_batch
from asr_core.metrics import wer
from asr_core.small.checkpoint import load_checkpoint, save_checkpoint
from asr_core.small.recognizer import Recognizer

Utterances = dict[int, list[tuple[str, str]]]


@dataclass(frozen=True)
class CallerMetaConfig:
    """Outer steps, callers per outer step, the outer learning rate and the seed."""

    outer_steps: int
    meta_batch: int = 4
    outer_lr: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class Candidate:
    """A meta-trained model written to ``path`` (weights ``sha256``), loaded as ``recognizer``."""

    path: str
    sha256: str
    recognizer: Recognizer


def load_verified(checkpoint: str, *, sha256: str, decoder: str) -> Recognizer:
    """The recognizer of ``checkpoint``; ``CheckpointError`` when it holds other weights than ``sha256``."""
    rec = Recognizer.load(checkpoint, decoder=decoder)
    if rec.meta["sha256"] != sha256:
        raise CheckpointError(f"{checkpoint}: the checkpoint holds other weights")
    return rec


def candidate_train(current: Recognizer, tasks: Utterances, cfg: CallerMetaConfig, *, folder: str,
                    provenance: dict, decoder: str) -> Candidate:
    """Meta-train a copy of ``current``'s model over the callers in ``tasks`` and write it as
    ``folder/candidate.pt`` with ``provenance`` in its meta (``meta_train_customers``)."""
    torch.manual_seed(cfg.seed)
    model, adapt_section = _meta_learn(cfg, current, tasks)
    meta = {k: v for k, v in current.meta.items() if k not in ("sha256", "path", "adapt")}
    meta["meta_train_customers"] = provenance
    path = os.path.join(folder, "candidate.pt")
    sha = save_checkpoint(model, path, meta=meta, adapt=adapt_section)
    return Candidate(path=path, sha256=sha, recognizer=Recognizer.load(path, decoder=decoder))


def _meta_learn(cfg: CallerMetaConfig, rec: Recognizer, tasks: Utterances):
    """Meta-train a copy of ``rec``'s model over the callers in ``tasks``;
    returns (model, adapt section for the checkpoint)."""
    model, meta = load_checkpoint(rec.meta["path"])
    model.eval()
    # The model keeps the adaptive group's pre-meta values (what callers without a profile get);
    # meta-learning moves the checkpoint's adaptation init, which goes back into the adapt section.
    start = initial_params(model)
    load_params(model, adaptation_init(model, meta))
    adapt = meta.get("adapt") or {"algo": "metasgd", "steps": 3, "step_sizes": 1.0}
    learner = MetaLearner(model, adapt["algo"], 1.0, lhuc_lr=50.0)
    sizes = adapt["step_sizes"]
    with torch.no_grad():
        for key, log_lr in learner.log_lr.items():
            size = sizes[key.replace("__", ".")] if isinstance(sizes, dict) else torch.tensor(float(sizes))
            log_lr.copy_(torch.log(size.float().clamp_min(1e-8)).expand_as(log_lr))
    groups = [{"params": g["params"], "lr": cfg.outer_lr} for g in learner.outer_parameters()]
    opt = torch.optim.Adam(groups) if adapt["algo"] != "reptile" else torch.optim.SGD(groups)
    batches = {}
    for caller, items in tasks.items():
        audios, texts = _load(items, model.cfg.sample_rate)
        half = max(1, len(audios) // 2)
        batches[caller] = (make_batch(model, audios[:half], texts[:half]), make_batch(model, audios[half:], texts[half:]))
    rng = random.Random(cfg.seed)
    callers = sorted(batches)
    steps = int(adapt["steps"])
    for _ in range(cfg.outer_steps):
        opt.zero_grad(set_to_none=True)
        chosen = rng.sample(callers, min(cfg.meta_batch, len(callers)))
        for caller in chosen:
            support, query = batches[caller]
            loss = learner.task_loss(support, query, steps, scale=1.0 / len(chosen))
            if not math.isfinite(float(loss)):
                raise TrainingError(f"meta-training diverged (query loss {float(loss)})")
        opt.step()
    learned = learner.step_sizes()
    section = {
        "algo": adapt["algo"],
        "steps": steps,
        "step_sizes": {k: v.detach().clone() for k, v in learned.items()}
        if adapt["algo"] == "metasgd" or isinstance(sizes, dict)
        else float(sizes),
        "init": initial_params(model),
    }
    load_params(model, start)
    return model, section


def held_out_wer(rec: Recognizer, held: Utterances) -> float:
    """Corpus WER on the second half of each held-out caller's utterances
    after supervised adaptation (no guard) on the first half."""
    pairs = []
    for items in held.values():
        audios, texts = _load(items, rec.sample_rate)
        half = max(1, len(audios) // 2)
        result = adapt_caller(rec, audios[:half], texts[:half], cfg=AdaptationConfig(mode="supervised", guard=False))
        for audio, text in zip(audios[half:], texts[half:]):
            pairs.append((text, rec.transcribe(audio, rec.sample_rate, params=result.params).text))
    return round(wer(pairs), 4)


def _load(items: list[tuple[str, str]], sample_rate: int):
    return [load_audio(path, sample_rate) for path, _ in items], [text for _, text in items]
