"""First-order Meta-SGD for the Whisper backbone's LoRA group, over synthetic training speakers.

    python -m asr_core meta-train-whisper --manifest data/wcorpus/manifest.tsv --out data/wmeta/whisper-tiny-meta.pt \
        --adaptation-out asr_core/checkpoints/whisper-tiny-adapt.pt

Speakers are tasks: `support` utterances adapt the group with `meta.adapt()` (the production
function, loss=whisper_loss), the loss on `query` utterances of the same speaker after adaptation
updates the initialization and the per-parameter step sizes (first order: the inner gradients
are not differentiated). Written to a copy of the backbone checkpoint under "adapt"
({"algo", "steps", "lora_rank", "lora_layers", "init", "step_sizes"}), covered by its sha256 (the
model version profiles name), and with --adaptation-out as a small settings file for the original
weights (`convert.write_adaptation`), which is what ships.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from asr_core.audio import load_audio
from asr_core.checkpoint import state_sha256
from asr_core.manifest import read_manifest
from asr_core.meta import adapt
from asr_core.whisper import convert
from asr_core.whisper.convert import adapt_payload_tensors
from asr_core.whisper.lora import initial_lora_params, make_whisper_batch, whisper_loss
from asr_core.whisper.recognizer import WhisperRecognizer


@dataclass(frozen=True)
class WhisperMetaConfig:
    manifest: str
    out: str
    backbone: str = "whisper-tiny"
    inner_steps: int = 2
    inner_lr: float = 0.2
    support: int = 5
    query: int = 5
    meta_batch: int = 2
    outer_steps: int = 20
    outer_lr: float = 3e-3
    trim_seconds: float | None = 1.0
    max_speakers: int = 0
    seed: int = 0
    lora_layers: int | None = None      # encoder blocks (from the top) with LoRA; None: the checkpoint's (2)
    adaptation_out: str | None = None   # also write the settings alone (small, shippable: convert.load(adaptation=))

    def __post_init__(self) -> None:
        if min(self.inner_steps, self.support, self.query, self.meta_batch, self.outer_steps) < 1:
            raise ValueError("inner_steps, support, query, meta_batch and outer_steps must be >= 1")
        if self.inner_lr <= 0 or self.outer_lr <= 0:
            raise ValueError("learning rates must be > 0")


def meta_train_whisper(cfg: WhisperMetaConfig, progress=sys.stderr) -> str:
    torch.set_num_threads(1)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    rec = WhisperRecognizer.load(cfg.backbone, trim_seconds=cfg.trim_seconds, lora_layers=cfg.lora_layers)
    rows = read_manifest(cfg.manifest, ("train",))
    by_spk: dict[str, list] = {}
    for u in rows:
        by_spk.setdefault(u.speaker, []).append(u)
    speakers = sorted(s for s, us in by_spk.items() if len(us) >= cfg.support + cfg.query)
    speakers = speakers[: cfg.max_speakers or None]
    if not speakers:
        raise ValueError(f"{cfg.manifest}: no training speaker has {cfg.support + cfg.query} utterances")
    init = {k: nn.Parameter(v) for k, v in initial_lora_params(rec).items()}
    log_lr = {k: nn.Parameter(torch.full_like(v, math.log(cfg.inner_lr))) for k, v in init.items()}
    opt = torch.optim.Adam([*init.values(), *log_lr.values()], lr=cfg.outer_lr)
    for p in rec.model.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    for step in range(cfg.outer_steps):
        opt.zero_grad()
        before = after = 0.0
        for spk in rng.sample(speakers, min(cfg.meta_batch, len(speakers))):
            us = rng.sample(by_spk[spk], cfg.support + cfg.query)
            audios = [load_audio(u.audio, 8000) for u in us]
            sup = make_whisper_batch(rec, audios[:cfg.support], [u.text for u in us[:cfg.support]], 8000)
            qry = make_whisper_batch(rec, audios[cfg.support:], [u.text for u in us[cfg.support:]], 8000)
            sizes = {k: v.exp() for k, v in log_lr.items()}
            adapted = adapt(rec.model, dict(init), sup, cfg.inner_steps, sizes, loss=whisper_loss)
            q = whisper_loss(rec.model, adapted, qry) / cfg.meta_batch
            q.backward()
            after += float(q.detach())
            with torch.no_grad():
                before += float(whisper_loss(rec.model, {k: v.detach() for k, v in init.items()}, qry)) / cfg.meta_batch
        opt.step()
        print(f"meta-train-whisper: step {step + 1}/{cfg.outer_steps} query loss before adaptation {before:.3f} "
              f"after {after:.3f}  mean step size {torch.cat([v.exp().flatten() for v in log_lr.values()]).mean():.3f}"
              f"  {time.perf_counter() - t0:.0f}s", file=progress, flush=True)
    info = {"algo": "metasgd-fo", "steps": cfg.inner_steps,
            "lora_rank": rec.model.cfg.lora_rank, "lora_layers": rec.model.cfg.lora_layers,
            "init": {k: v.detach().clone() for k, v in init.items()},
            "step_sizes": {k: v.detach().exp() for k, v in log_lr.items()}}
    if cfg.adaptation_out:
        convert.write_adaptation(info, rec.meta["sha256"], cfg.adaptation_out)
    return save_with_adaptation(rec.meta["path"], cfg.out, info)


def save_with_adaptation(src: str, out: str, info: dict) -> str:
    """Copy the backbone checkpoint with the meta-learned adaptation settings; returns its sha256."""
    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload["adapt"] = info
    payload["sha256"] = state_sha256({**payload["state_dict"], **adapt_payload_tensors(info)})
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(payload, out + ".part")
    os.replace(out + ".part", out)
    return out
