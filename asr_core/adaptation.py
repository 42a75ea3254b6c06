"""Production per-caller adaptation: supervised or label-free, with a guard.

    result = adapt_caller(recognizer, audios, texts, mode="supervised")
    result.accepted, result.params, result.metrics

Supervised: the caller's verified transcripts. Label-free: the first pass's own
hypotheses, kept only where their confidence is high (pseudo-labels); without
references only the small part of the group adapts (feature transform + LHUC,
not the feed-forward adapters). Both run `meta.adapt()` with the checkpoint's meta-learned step
sizes and steps. The guard adapts on all but `holdout` utterances and keeps the
result only if the held-out ones do not get worse: by WER against the
references (supervised), or by mean word confidence of the first pass's
hypotheses (label-free, where no reference exists). An accepted profile is then
adapted once more on all the utterances.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from asr_core.decoder import Transcript
from asr_core.meta import adapt, adaptation_init, detached, initial_params, make_batch
from asr_core.metrics import wer
from asr_core.model import ADAPTER_NAMES
from asr_core.recognizer import Recognizer

MODES = ("supervised", "label-free")
# Without meta-learned settings: 3 plain SGD steps with step sizes tuned on the dev speakers
# (the feature transform's gradients are ~50x larger than the LHUC scales').
DEFAULT_STEPS, DEFAULT_STEP_SIZE, DEFAULT_LHUC_STEP_SIZE = 3, 1.0, 50.0


@dataclass(frozen=True)
class AdaptationConfig:
    mode: str = "supervised"
    steps: int | None = None            # None: the checkpoint's meta-learned number of steps
    holdout: int = 3                    # utterances kept out of adaptation for the guard (3 of 10 beat 2:
                                        # fewer callers made worse; model card)
    min_confidence: float = 0.75        # label-free: pseudo-labels below this are dropped
    guard: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps is not None and not 0 <= self.steps <= 50:
            raise ValueError(f"steps must be in 0..50, got {self.steps}")
        if self.holdout < 0 or not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError("holdout must be >= 0 and min_confidence in [0, 1]")


@dataclass
class AdaptationResult:
    params: dict[str, Tensor]
    accepted: bool
    metrics: dict = field(default_factory=dict)


def step_settings(rec: Recognizer, steps: int | None = None) -> tuple[int, dict[str, Tensor] | float]:
    a = rec.meta.get("adapt") or {}
    sizes = a.get("step_sizes") or {k: torch.tensor(DEFAULT_LHUC_STEP_SIZE if k.endswith(".lhuc") else DEFAULT_STEP_SIZE)
                                    for k in rec.adaptive_names()}
    return (a.get("steps", DEFAULT_STEPS) if steps is None else steps), sizes


def adapt_caller(rec: Recognizer, audios: list[Tensor], texts: list[str] | None = None, *,
                 start: dict[str, Tensor] | None = None, cfg: AdaptationConfig = AdaptationConfig()) -> AdaptationResult:
    """Adapt the recognizer's speaker-adaptive group to one caller.

    audios: (samples,) tensors at the recognizer's rate; texts: references (supervised) or None.
    start: the caller's current profile params. Without one, adaptation starts from the checkpoint's
    meta-learned init, and the guard compares against what the caller gets now: the base model.
    """
    steps, sizes = step_settings(rec, cfg.steps)
    if cfg.mode == "label-free":
        # Pseudo-labels are noisy: the feed-forward adapters (tens of thousands of values) learn the
        # first pass's own errors and make it confidently wrong, so only the feature transform and
        # the LHUC scales adapt without references.
        sizes = {k: (torch.zeros_like(v) if k.rsplit(".", 1)[-1] in ADAPTER_NAMES else v) for k, v in sizes.items()}
    return guarded_adaptation(
        audios, texts, start=detached(start) if start else adaptation_init(rec.model, rec.meta),
        baseline=detached(start) if start else initial_params(rec.model), cfg=cfg, steps=steps,
        sample_rate=rec.sample_rate,
        transcribe=lambda a, p: rec.decode(rec.log_probs(a, p)),
        fit=lambda a, t, p: detached(adapt(rec.model, p, make_batch(rec.model, a, t), steps, sizes)))


def guarded_adaptation(audios: list[Tensor], texts: list[str] | None, *, start: dict[str, Tensor],
                       cfg: AdaptationConfig, steps: int, sample_rate: int, baseline: dict[str, Tensor] | None = None,
                       transcribe: Callable[[Tensor, dict[str, Tensor]], Transcript],
                       fit: Callable[[list[Tensor], list[str], dict[str, Tensor]], dict[str, Tensor]]) -> AdaptationResult:
    """The procedure shared by every backbone: pseudo-label (label-free), adapt on all but `holdout`
    utterances, keep the result only if the held-out ones do not get worse, then refit on all of them.

    transcribe(audio, params) -> Transcript; fit(audios, texts, start_params) -> adapted params.
    baseline: the params the caller is recognized with now (default `start`): pseudo-labels come
    from it, the guard compares against it, and a rejected adaptation returns it.
    """
    current = start if baseline is None else baseline
    t0 = time.perf_counter()
    if not audios:
        raise ValueError("no audio to adapt on")
    if cfg.mode == "supervised" and (texts is None or len(texts) != len(audios)):
        raise ValueError("supervised adaptation needs one reference text per utterance")
    if cfg.mode == "label-free":
        first = [transcribe(a, current) for a in audios]
        keep = [i for i, t in enumerate(first) if t.text and t.confidence >= cfg.min_confidence]
        audios, texts = [audios[i] for i in keep], [first[i].text for i in keep]
        if not audios:
            return AdaptationResult(current, False, {"mode": cfg.mode, "reason": "no confident pseudo-labels",
                                                   "utterances": 0, "seconds": round(time.perf_counter() - t0, 3)})
    hold = min(cfg.holdout, len(audios) - 1) if cfg.guard else 0
    train_a, train_t = audios[: len(audios) - hold], texts[: len(texts) - hold]
    held_a, held_t = audios[len(audios) - hold:], texts[len(texts) - hold:]
    params = fit(train_a, train_t, start)
    metrics = {"mode": cfg.mode, "steps": steps, "utterances": len(train_a), "held_out": hold,
               "audio_seconds": round(sum(a.numel() for a in train_a) / sample_rate, 2)}
    accepted = True
    if hold:
        before, after = [transcribe(a, current) for a in held_a], [transcribe(a, params) for a in held_a]
        if cfg.mode == "supervised":
            metrics["wer_before"] = round(wer(list(zip(held_t, [t.text for t in before]))), 4)
            metrics["wer_after"] = round(wer(list(zip(held_t, [t.text for t in after]))), 4)
            accepted = metrics["wer_after"] <= metrics["wer_before"]
        else:
            metrics["conf_before"] = round(sum(t.confidence for t in before) / hold, 4)
            metrics["conf_after"] = round(sum(t.confidence for t in after) / hold, 4)
            accepted = metrics["conf_after"] >= metrics["conf_before"]
    if accepted and hold:
        # the guard decided on held-out utterances; the kept profile then learns from all of them
        params = fit(audios, texts, start)
        metrics["utterances"] = len(audios)
    metrics["accepted"] = accepted
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    return AdaptationResult(params if accepted else current, accepted, metrics)


def finetune(rec: Recognizer, params: dict[str, Tensor], audios: list[Tensor], texts: list[str],
             steps: int, lr: float = 0.05) -> dict[str, Tensor]:
    """Baseline: plain Adam on the same group, same number of steps (not meta-learned)."""
    from asr_core.meta import ctc_loss
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    batch = make_batch(rec.model, audios, texts)
    for _ in range(steps):
        opt.zero_grad()
        ctc_loss(rec.model, p, batch).backward()
        opt.step()
    return detached(p)
