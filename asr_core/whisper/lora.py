"""The LoRA group of Whisper's top encoder blocks: meta-training tooling (`meta_train.py`,
`meta-train-whisper`) and the LoRA studies (bench/guard_study.py), never the product's path.

Adapting it needs the encoder's top blocks on the whole 30 s window at every step (128-137 s per
caller); callers are adapted on `encoder.ln_post` instead (`asr_core.whisper.adapt`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_core.meta import detached
from asr_core.whisper.model import Whisper
from asr_core.whisper.recognizer import WhisperRecognizer


def first_adapted_block(model) -> int:
    """Kept for the old LoRA tooling (meta_train): the first encoder block with LoRA."""
    return model.cfg.n_audio_layer - model.cfg.lora_layers


LORA_STEPS, LORA_STEP_SIZE = 4, 0.05


def initial_lora_params(rec: WhisperRecognizer) -> dict[str, Tensor]:
    """The LoRA group's starting point: the meta-learned init if the checkpoint has one, else B = 0."""
    init = rec.meta.get("adapt", {}).get("init")
    if init:
        return detached(init)
    return plain_lora_params(rec)


def plain_lora_params(rec: WhisperRecognizer) -> dict[str, Tensor]:
    """The model's own LoRA group (B = 0): exactly Whisper."""
    own = dict(rec.model.named_parameters())
    return {k: own[k].detach().clone() for k in rec.adaptive_names()}


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


def step_settings(rec: WhisperRecognizer, steps: int | None = None) -> tuple[int, dict[str, Tensor] | float]:
    a = rec.meta.get("adapt") or {}
    return (a.get("steps", LORA_STEPS) if steps is None else steps), a.get("step_sizes", LORA_STEP_SIZE)
