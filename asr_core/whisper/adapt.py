"""Per-caller adaptation of the Whisper backbone's LoRA group, through the same `meta.adapt()`.

    batch = make_whisper_batch(rec, audios, texts, sample_rate=8000)
    params = adapt(rec.model, initial_whisper_params(rec), batch, steps, step_sizes, loss=whisper_loss)
    rec.transcribe(audio, 8000, params=params)

The loss is teacher-forced cross-entropy of the reference tokens (prompt excluded, end-of-text
included). The encoder blocks below the LoRA group are frozen, so their output is computed once
per batch (`WhisperBatch.hidden`) and each adaptation step runs only the adapted blocks and the
decoder. `adapt_whisper_caller` is the production entry: supervised (verified transcripts) or
label-free (confident pseudo-labels: of the streaming first pass, or of the backbone itself), with
the same guard as the small model (`asr_core.adaptation`).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_core.adaptation import AdaptationConfig, AdaptationResult, guarded_adaptation
from asr_core.decoder import Transcript
from asr_core.meta import adapt, detached
from asr_core.metrics import word_errors
from asr_core.whisper.model import Whisper
from asr_core.whisper.recognizer import WhisperRecognizer

# plain SGD on the LoRA group without meta-learned settings; tuned on 6 training speakers
# (bench/whisper_adapt_sweep.py: 0.05 x 4 steps -14 % WER, 0.2 made callers worse)
DEFAULT_STEPS, DEFAULT_STEP_SIZE = 4, 0.05
LABEL_FREE_MIN_CONFIDENCE = 0.5             # Whisper's token probabilities run lower than the CTC model's
# label-free from the streaming first pass: its transcripts kept from this confidence (on the 20
# held-out speakers' adapt utterances: 150 of 200 kept, 12 % WER among them; 0.85: 78, 6.7 %)
FIRST_PASS_MIN_CONFIDENCE = 0.75


@dataclass
class WhisperBatch:
    """Utterances of one caller. hidden: (batch, frames // 2, d) output of the frozen encoder blocks;
    tokens: (batch, T) prompt + text + end-of-text, padded with end-of-text; mask: (batch, T - 1),
    1 where tokens[:, 1:] is a target."""
    hidden: Tensor
    tokens: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]


def first_adapted_block(model: Whisper) -> int:
    return model.cfg.n_audio_layer - model.cfg.lora_layers


class _Upper(nn.Module):
    """Adapted encoder blocks + decoder, as one module so functional_call can swap the LoRA group."""

    def __init__(self, model: Whisper):
        super().__init__()
        self.model = model

    def forward(self, hidden: Tensor, tokens: Tensor) -> Tensor:
        """hidden (batch, S, d), tokens (batch, T) -> logits (batch, T, vocab)."""
        m = self.model
        for block in m.encoder.blocks[first_adapted_block(m):]:
            hidden = block(hidden)[0]
        audio = m.encoder.ln_post(hidden)
        return m.decoder(tokens, m.decoder.init_cache(audio))[0]


def make_whisper_batch(rec: WhisperRecognizer, audios: list[Tensor], texts: list[str], sample_rate: int) -> WhisperBatch:
    """(samples,) audios at `sample_rate` + their texts -> WhisperBatch (frozen part precomputed)."""
    if len(audios) != len(texts) or not audios:
        raise ValueError("need one text per utterance, and at least one utterance")
    m = rec.model
    feats = [rec.features(rec.prepare(a, sample_rate)) for a in audios]
    width = rec._width(max(f for _, f in feats))
    mels = torch.stack([mel[:, :width] for mel, _ in feats])                  # (batch, n_mels, width)
    with torch.no_grad():
        x = F.gelu(m.encoder.conv2(F.gelu(m.encoder.conv1(mels)))).transpose(1, 2)
        x = x + m.encoder.positional_embedding[:x.shape[1]]
        for block in m.encoder.blocks[:first_adapted_block(m)]:
            x = block(x)[0]
    tok = rec.tokenizer
    seqs = [tok.prompt + tok.encode(" " + t.strip())[: m.cfg.n_text_ctx // 2] + [tok.eot] for t in texts]
    longest = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), longest), tok.eot, dtype=torch.long)
    mask = torch.zeros(len(seqs), longest - 1)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        mask[i, len(tok.prompt) - 1:len(s) - 1] = 1.0
    return WhisperBatch(x, tokens, mask)


def whisper_loss(model: Whisper, params: dict[str, Tensor], batch: WhisperBatch,
                 twice_differentiable: bool = True) -> Tensor:
    """Mean cross-entropy per target token with `params` in place of the model's LoRA group.
    Plain tensor ops, so second-order MAML can differentiate it twice."""
    logits = torch.func.functional_call(_Upper(model), {f"model.{k}": v for k, v in params.items()},
                                        (batch.hidden, batch.tokens[:, :-1]), strict=False)
    ce = F.cross_entropy(logits.transpose(1, 2), batch.tokens[:, 1:], reduction="none")   # (batch, T - 1)
    return (ce * batch.mask).sum() / batch.mask.sum().clamp(min=1.0)


def initial_whisper_params(rec: WhisperRecognizer) -> dict[str, Tensor]:
    """Where a caller's first adaptation starts: the meta-learned LoRA init, else the model's own
    (B = 0: plain Whisper). A meta-learned init is made to be adapted from, not to recognize with:
    a caller without a profile is recognized with `plain_whisper_params` (params=None)."""
    init = rec.meta.get("adapt", {}).get("init")
    if init:
        return detached(init)
    return plain_whisper_params(rec)


def plain_whisper_params(rec: WhisperRecognizer) -> dict[str, Tensor]:
    """The model's own LoRA group (B = 0): exactly Whisper, what a caller without a profile gets."""
    own = dict(rec.model.named_parameters())
    return {k: own[k].detach().clone() for k in rec.adaptive_names()}


def step_settings(rec: WhisperRecognizer, steps: int | None = None) -> tuple[int, dict[str, Tensor] | float]:
    a = rec.meta.get("adapt") or {}
    return (a.get("steps", DEFAULT_STEPS) if steps is None else steps), a.get("step_sizes", DEFAULT_STEP_SIZE)


def adapt_whisper_caller(rec: WhisperRecognizer, audios: list[Tensor], texts: list[str] | None, sample_rate: int, *,
                         start: dict[str, Tensor] | None = None, cfg: AdaptationConfig = AdaptationConfig(),
                         first_pass: Callable[[Tensor], Transcript] | None = None) -> AdaptationResult:
    """Adapt the LoRA group to one caller with the shared guarded procedure
    (`asr_core.adaptation.guarded_adaptation`). first_pass(audio at `sample_rate`): label-free
    pseudo-labels from another recognizer (the streaming model) instead of Whisper's own."""
    steps, sizes = step_settings(rec, cfg.steps)
    return guarded_adaptation(
        audios, texts, start=detached(start) if start else initial_whisper_params(rec),
        baseline=detached(start) if start else plain_whisper_params(rec), cfg=cfg, steps=steps,
        sample_rate=sample_rate,
        transcribe=lambda a, p: rec.transcribe(a, sample_rate, params=p), first_pass=first_pass,
        fit=lambda a, t, p: detached(adapt(rec.model, p, make_whisper_batch(rec, a, t, sample_rate), steps, sizes,
                                           loss=whisper_loss)))


def evaluate_whisper_adaptation(rec: WhisperRecognizer, manifest: str, mode: str, threads: int = 1,
                                max_speakers: int = 0, guard: bool = False, progress=sys.stderr,
                                first_pass: Callable[[Tensor], Transcript] | None = None, speakers: str = "") -> dict:
    """Per test speaker: adapt on its `adapt` utterances, WER on its `test` utterances, before/after.
    mode: 'supervised', 'label-free' or 'all'. The guard is off by default here so that the raw
    effect of adaptation is measured (the guard only ever reverts to 'none'). first_pass: label-free
    pseudo-labels from this recognizer of 8 kHz audio (as the product), else Whisper's own."""
    from asr_core.audio import load_audio
    from asr_core.evaluate import speakers_with_tests
    from asr_core.manifest import read_manifest
    torch.set_num_threads(threads)
    modes = ["supervised", "label-free"] if mode == "all" else [mode]
    rows = read_manifest(manifest, ("adapt", "test"), speakers)
    speakers = speakers_with_tests(rows, manifest, max_speakers)
    res = {m: {"errors": 0, "words": 0, "seconds": 0.0, "speakers": {}} for m in ["none", *modes]}
    for si, spk in enumerate(speakers):
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        ad_audio = [load_audio(u.audio, 8000) for u in ad]
        te_audio = [load_audio(u.audio, 8000) for u in te]
        for m in res:
            t0 = time.perf_counter()
            params = None
            if m != "none":
                cfg = AdaptationConfig(m, guard=guard, min_confidence=FIRST_PASS_MIN_CONFIDENCE if first_pass
                                       else LABEL_FREE_MIN_CONFIDENCE)
                params = adapt_whisper_caller(rec, ad_audio, [u.text for u in ad] if m == "supervised" else None, 8000,
                                              cfg=cfg, first_pass=first_pass).params
            sec = time.perf_counter() - t0 if m != "none" else 0.0
            counts = [word_errors(u.text, rec.transcribe(a, 8000, params=params, word_timestamps=False).text)
                      for u, a in zip(te, te_audio)]
            e, n = sum(c[0] for c in counts), sum(c[1] for c in counts)
            r = res[m]
            r["errors"], r["words"], r["seconds"] = r["errors"] + e, r["words"] + n, r["seconds"] + sec
            r["speakers"][spk] = {"wer": round(e / max(n, 1), 4), "words": n}
        print(f"whisper adapt-eval: {si + 1}/{len(speakers)} {spk}  " + "  ".join(
            f"{m} {res[m]['speakers'][spk]['wer']:.3f}" for m in res), file=progress, flush=True)
    return {m: {"wer": round(r["errors"] / max(r["words"], 1), 4),
                "seconds_per_speaker": round(r["seconds"] / max(len(speakers), 1), 3),
                "speakers": r["speakers"]} for m, r in res.items()}
