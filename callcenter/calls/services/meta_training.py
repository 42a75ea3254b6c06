"""The model side of periodic meta-training (``services.training`` holds its
rules): meta-learn a candidate from the active model over customers'
verified utterances, and score a model on held-out customers after adapting
to each. asr_core's ``MetaLearner`` and ``adapt_caller`` do the work; nothing
here touches the database.

Utterances are ``(audio file path, normalized text)`` pairs, grouped by
customer id.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import torch
from django.conf import settings

from asr_core.adaptation import AdaptationConfig, adapt_caller
from asr_core.audio import load_audio
from asr_core.checkpoint import load_checkpoint, save_checkpoint
from asr_core.meta import MetaLearner, adaptation_init, initial_params, load_params, make_batch
from asr_core.metrics import wer
from asr_core.recognizer import Recognizer
from asr_core.text import normalize
from callcenter.errors import ModelVersionInvalid, TrainingFailed

Utterances = dict[int, list[tuple[str, str]]]


def text_normalize(text: str) -> str:
    """A verified transcript as the recognizer's vocabulary spells it."""
    return normalize(text)


def recognizer_load(*, checkpoint: str, sha256: str, name: str) -> Recognizer:
    """The recognizer of a model version; ``ModelVersionInvalid`` when its
    checkpoint holds other weights than the version records."""
    rec = Recognizer.load(checkpoint, decoder=settings.ASR_DECODER)
    if rec.meta["sha256"] != sha256:
        raise ModelVersionInvalid(f"model version {name!r}: the checkpoint holds other weights")
    return rec


@dataclass(frozen=True)
class Candidate:
    """A meta-trained model written to ``path`` (weights ``sha256``), loaded as ``recognizer``."""

    path: str
    sha256: str
    recognizer: Recognizer


def candidate_train(cfg, current: Recognizer, tasks: Utterances, *, folder: str, provenance: dict) -> Candidate:
    """Meta-train a copy of ``current``'s model over the customers in
    ``tasks`` (``cfg``: outer steps, meta batch, outer learning rate, seed)
    and write it as ``folder/candidate.pt`` with ``provenance`` in its meta."""
    torch.manual_seed(cfg.seed)
    model, adapt_section = _meta_learn(cfg, current, tasks)
    meta = {k: v for k, v in current.meta.items() if k not in ("sha256", "path", "adapt")}
    meta["meta_train_customers"] = provenance
    path = os.path.join(folder, "candidate.pt")
    sha = save_checkpoint(model, path, meta=meta, adapt=adapt_section)
    return Candidate(path=path, sha256=sha, recognizer=Recognizer.load(path, decoder=settings.ASR_DECODER))


def _meta_learn(cfg, rec, tasks: dict[int, list[tuple[str, str]]]):
    """Meta-train a copy of ``rec``'s model over the customers in ``tasks``;
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
    for customer, items in tasks.items():
        audios, texts = _load(items, model.cfg.sample_rate)
        half = max(1, len(audios) // 2)
        batches[customer] = (make_batch(model, audios[:half], texts[:half]), make_batch(model, audios[half:], texts[half:]))
    rng = random.Random(cfg.seed)
    customers = sorted(batches)
    steps = int(adapt["steps"])
    for _ in range(cfg.outer_steps):
        opt.zero_grad(set_to_none=True)
        chosen = rng.sample(customers, min(cfg.meta_batch, len(customers)))
        for customer in chosen:
            support, query = batches[customer]
            loss = learner.task_loss(support, query, steps, scale=1.0 / len(chosen))
            if not math.isfinite(float(loss)):
                raise TrainingFailed(f"meta-training diverged (query loss {float(loss)})")
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
    """Corpus WER on the second half of each held-out customer's utterances
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
